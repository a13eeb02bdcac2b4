"""The systemd unit and the secrets it hands the service, black-box: the unit's
``LoadCredential=`` IDs are what the shipped config names, ``check --unit`` reads a key as
the service will, ``check --as-user`` warns of a key the service user could not read, a
real server reads ``$CREDENTIALS_DIRECTORY``, and a store password from ``password_file``
opens a real ``redis-server`` that requires one."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from router.cli.access import credentials
from tests.conftest import write_zone
from tests.harness import ROOT, RedisServer, RouterProcess
from tests.test_dns import ask

UNIT = ROOT / "systemd" / "mirror-router.service"
NAMED = re.compile(r"\$(?:\{CREDENTIALS_DIRECTORY\}|CREDENTIALS_DIRECTORY)/([\w.-]+)")

ZONE = '''
[zone]
origin = "signed.example.com"
nameservers = ["ns1.example.net"]
hostmaster = "hostmaster@example.com"
dnssec_key = "{key}"

[[zone.records]]
name = "www"
type = "A"
data = "192.0.2.1"
'''


def run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "router", *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=60)


def test_the_units_credentials_are_what_the_shipped_config_names():
    unit = UNIT.read_text()
    loaded = credentials(unit)
    assert set(loaded) == {"dnssec.key", "tls-key.pem", "store-password"}
    named = {m for text in (unit, (ROOT / "deploy/server.toml").read_text(),
                            (ROOT / "README.md").read_text()) for m in NAMED.findall(text)}
    assert named - {"ID"} == set(loaded)  # ID: the comment that says how
    for name in loaded:  # a missing source is not fatal: an empty default stands in
        assert f"SetCredential={name}:" in unit
    assert re.search(r"^Documentation=file://(\S+)$", unit, re.M)[1].endswith(
        "share/mirror-router/README.md")


@pytest.fixture
def signed(tmp_path):
    """A zone signed by a root-owned 0600 key in a credentials folder, and the unit with
    that folder as the credentials' source."""
    secrets = tmp_path / "credentials"
    secrets.mkdir(mode=0o700)
    out = run("dnssec", "keygen", "--zone", "signed.example.com", "--out",
              str(secrets / "dnssec.key"))
    assert out.returncode == 0, out.stderr
    zones = write_zone(tmp_path / "zones",
                       ZONE.format(key="$CREDENTIALS_DIRECTORY/dnssec.key"), "signed.toml")
    unit = tmp_path / "mirror-router.service"
    unit.write_text(UNIT.read_text().replace("/etc/mirror-router/credentials", str(secrets)))
    return zones, unit, secrets


def test_check_reads_a_credential_as_the_unit_hands_it(signed):
    zones, unit, _secrets = signed
    bare = run("check", "--zones", str(zones))
    assert bare.returncode == 1
    assert "zone.dnssec_key" in bare.stderr and "CREDENTIALS_DIRECTORY" in bare.stderr
    assert "check --unit" in bare.stderr
    through = run("check", "--zones", str(zones), "--unit", str(unit), "--as-user",
                  "mirror-router-dynamic")
    assert through.returncode == 0, through.stderr
    assert "signed (ecdsap256sha256" in through.stdout
    assert "warning" not in through.stderr  # the service's own copy: always readable


def test_a_missing_credential_source_is_named(signed):
    zones, unit, secrets = signed
    (secrets / "dnssec.key").unlink()
    out = run("check", "--zones", str(zones), "--unit", str(unit))
    assert out.returncode == 1
    assert str(secrets / "dnssec.key") in out.stderr and "no such file" in out.stderr


def test_check_as_user_warns_of_a_key_the_service_could_not_read(signed, tmp_path):
    _zones, _unit, secrets = signed
    zones = write_zone(tmp_path / "direct",
                       ZONE.format(key=secrets / "dnssec.key"), "signed.toml")
    out = run("check", "--zones", str(zones), "--as-user", "mirror-router-dynamic")
    assert out.returncode == 0, out.stderr
    warning = [line for line in out.stderr.splitlines() if line.startswith("warning:")]
    assert len(warning) == 1 and "dnssec_key" in warning[0]
    assert "not readable by mirror-router-dynamic" in warning[0]
    assert "LoadCredential=" in warning[0]
    assert "warning" not in run("check", "--zones", str(zones), "--as-user", "root").stderr


def test_the_server_signs_with_the_key_in_credentials_directory(signed):
    zones, _unit, secrets = signed
    router = RouterProcess(zones, "--no-probe", env={"CREDENTIALS_DIRECTORY": str(secrets)})
    try:
        msg = ask(router, "signed.example.com.", "DNSKEY", want_dnssec=True)
        assert any(rr.rdtype == 48 for rr in msg.answer)  # DNSKEY
    finally:
        assert router.stop() == 0


@pytest.mark.skipif(shutil.which("redis-server") is None, reason="needs redis-server")
def test_a_store_password_from_a_file_opens_a_store_that_requires_one(tmp_path):
    store = RedisServer(tmp_path, password="s3cret-from-a-credential")
    try:
        (tmp_path / "store-password").write_text("s3cret-from-a-credential\n")
        settings = tmp_path / "server.toml"
        settings.write_text(f'[fleet]\nstore = "redis://127.0.0.1:{store.port}/0"\n'
                            'password_file = "$CREDENTIALS_DIRECTORY/store-password"\n')
        env = {**__import__("os").environ, "CREDENTIALS_DIRECTORY": str(tmp_path)}
        out = run("fleet", "status", "--config", str(settings), "--json", env=env)
        assert out.returncode == 0, out.stderr
        assert "nodes" in json.loads(out.stdout)
        settings.write_text(f'[fleet]\nstore = "redis://:x@127.0.0.1:{store.port}/0"\n'
                            'password_file = "$CREDENTIALS_DIRECTORY/store-password"\n')
        twice = run("check", "--zones", str(ROOT / "zones"), "--config", str(settings), env=env)
        assert twice.returncode == 1 and "fleet.password_file" in twice.stderr
    finally:
        store.close()


def test_systemd_analyze_verifies_the_unit(tmp_path):
    if shutil.which("systemd-analyze") is None:
        pytest.skip("needs systemd-analyze")
    unit = tmp_path / "mirror-router.service"
    unit.write_text(UNIT.read_text().replace("/opt/mirror-router/bin/mirror-router",
                                             str(Path(sys.executable).parent / "mirror-router")))
    out = subprocess.run(["systemd-analyze", "verify", str(unit)], capture_output=True,
                         text=True, timeout=60)
    assert out.returncode == 0 and "Invalid" not in out.stderr, out.stderr
