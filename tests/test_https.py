"""HTTPS, black-box: the redirector over TLS with a throw-away CA, for curl and for the
``go`` command, and a certificate renewed in place with no failed request."""

from __future__ import annotations

import http.client
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from cryptography import x509

from tests.conftest import write_zone
from tests.harness import ROOT, RouterProcess, five_city_zone, proxy_targets, wait_until
from tests.harness import module_files as harness_module_files
from tests.tls import make_ca

GO = shutil.which("go")
MODULE = "example.com/hello"


def module_files(version: str = "v1.1.0") -> dict[str, bytes]:
    """The GOPROXY tree of a one-file module, as a module proxy serves it."""
    files = harness_module_files(MODULE, [version], "hello.go")
    del files[f"/{MODULE}/@latest"]
    return files


def proxies_service(proxies) -> str:
    targets = proxy_targets(proxies)
    return f'''
[services.modules]
http_prefix = "/mod/"
link_alternates = 0
default_location = {{ lat = 50.11, lon = 8.68 }}   # 127.0.0.1 is measured from Frankfurt
immutable = ["*/@v/*.info", "*/@v/*.mod", "*/@v/*.zip"]
health = {{ path = "/health", interval = "500ms", timeout = "500ms", rise = 1, fall = 1 }}
{targets}'''


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    return make_ca(tmp_path_factory.mktemp("pki"))


@pytest.fixture(scope="module")
def proxies(farm, pki):
    """Two HTTPS module proxies on loopback: Frankfurt, nearest, lacks v1.1.0.zip;
    Ashburn has it all."""
    found = {name: farm.mirror(name, tls=pki.server_context(), host="localhost")
             for name in ("fra-proxy", "iad-proxy")}
    for m in found.values():
        m.files.update(module_files())
    del found["fra-proxy"].files[f"/{MODULE}/@v/v1.1.0.zip"]
    return found


@pytest.fixture(scope="module")
def secure(tmp_path_factory, city_mirrors, proxies, pki):
    folder = tmp_path_factory.mktemp("https")
    served = folder / "served"  # the router's own copy, renewed in place by the tests
    served.mkdir()
    for f in (pki.cert, pki.key):
        shutil.copy(f, served / f.name)
    # the city mirrors are http://: an HTTPS client may be sent there only so
    zones = write_zone(folder / "zones", five_city_zone(
        city_mirrors, extra_service=proxies_service(proxies),
        downloads_keys="allow_downgrade = true"))
    router = RouterProcess(zones, "--https", "127.0.0.1:0", "--trusted-proxy", "127.0.0.1/32",
                           "--tls-cert", str(served / "server.pem"),
                           "--tls-key", str(served / "server.key"), "--ca-file", str(pki.ca))
    router.served = served
    yield router
    assert router.stop() == 0


def client(pki, **kw) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=str(pki.ca))
    for k, v in kw.items():
        setattr(context, k, v)
    return context


def fetch(port: int, pki, path: str = "/go1.22.5.linux-amd64.tar.gz") -> tuple[int, int, str]:
    """One request on a new TLS connection: (status, the server certificate's serial,
    Location)."""
    conn = http.client.HTTPSConnection("127.0.0.1", port, timeout=5, context=client(pki))
    try:
        conn.request("GET", path, headers={"X-Forwarded-For": "1.0.16.1"})
        r = conn.getresponse()
        r.read()
        der = conn.sock.getpeercert(binary_form=True)
        return r.status, x509.load_der_x509_certificate(der).serial_number, \
            r.headers.get("Location", "")
    finally:
        conn.close()


def test_curl_gets_the_redirect_over_https(secure, pki, city_mirrors):
    done = subprocess.run(["curl", "-sS", "--cacert", str(pki.ca), "-o", "/dev/null", "-w",
                           "%{http_code} %{redirect_url} %{ssl_verify_result}",
                           "-H", "X-Forwarded-For: 1.0.16.1",
                           f"https://127.0.0.1:{secure.https_port}/x.tar.gz"],
                          capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, done.stderr
    assert done.stdout == f"302 {city_mirrors['tyo'].base}/dl/x.tar.gz 0"


@pytest.mark.filterwarnings("ignore:ssl.TLSVersion.TLSv1_1 is deprecated")
def test_old_protocols_are_refused(secure, pki):
    old = client(pki, maximum_version=ssl.TLSVersion.TLSv1_1,
                 minimum_version=ssl.TLSVersion.MINIMUM_SUPPORTED)
    with socket.create_connection(("127.0.0.1", secure.https_port), timeout=5) as raw, \
            pytest.raises(ssl.SSLError):
        old.wrap_socket(raw, server_hostname="localhost")


@pytest.mark.skipif(GO is None, reason="the go command is not installed (.ci/run installs it)")
def test_go_mod_download_through_an_https_goproxy_skips_a_proxy_lacking_the_zip(
        secure, pki, proxies, tmp_path):
    """Without a catalog, the immutable module files are HEAD-checked on first request:
    the nearest proxy lacks the zip (404), so the go command is sent to the other."""
    env = {"PATH": str(Path(GO).parent), "HOME": str(tmp_path), "GOPATH": str(tmp_path / "go"),
           "GOCACHE": str(tmp_path / "cache"), "GOFLAGS": "-modcacherw", "GOSUMDB": "off",
           "GOPROXY": f"https://127.0.0.1:{secure.https_port}/mod", "GOTOOLCHAIN": "local",
           "SSL_CERT_FILE": str(pki.ca), "GO111MODULE": "on"}
    done = subprocess.run([GO, "mod", "download", "-json", f"{MODULE}@v1.1.0"], env=env,
                          cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    assert '"Version": "v1.1.0"' in done.stdout
    zip_path = f"/{MODULE}/@v/v1.1.0.zip"
    gets = {name: [p for method, p in m.requests if method == "GET" and "/@v/" in p]
            for name, m in proxies.items()}
    assert gets["iad-proxy"] == [zip_path]  # the zip, from the proxy that has it
    assert f"/{MODULE}/@v/v1.1.0.info" in gets["fra-proxy"] and zip_path not in gets["fra-proxy"]
    assert ("HEAD", zip_path) in proxies["fra-proxy"].requests  # checked, found missing
    mutable = [p for _m, p in proxies["fra-proxy"].requests if p.endswith("/@v/list")]
    assert all(m == "GET" for m, p in proxies["fra-proxy"].requests if p in mutable)


def test_a_certificate_renewed_in_place_is_served_with_no_failed_request(secure, pki):
    before = fetch(secure.https_port, pki)[1]
    seen: list[tuple[int, int, str]] = []
    failures: list[BaseException] = []
    stop = threading.Event()

    def hammer() -> None:
        while not stop.is_set():
            try:
                seen.append(fetch(secure.https_port, pki))
            except Exception as e:  # a failed request: the test fails below
                failures.append(e)
    worker = threading.Thread(target=hammer)
    worker.start()
    try:
        renewed = _renew(secure, pki)
        wait_until(lambda: seen and seen[-1][1] == renewed, 15, what="the new certificate")
    finally:
        stop.set()
        worker.join(10)
    assert renewed != before and not failures, failures
    assert {status for status, _serial, _where in seen} == {302}
    assert secure.find("tls_reloaded")


def test_a_bad_certificate_keeps_the_old_one_and_says_why(secure, pki):
    serving = fetch(secure.https_port, pki)[1]
    (secure.served / "server.pem").write_text("not a certificate\n")
    secure.signal(signal.SIGHUP)
    failed = secure.wait_for("tls_reload_failed", 10)
    assert str(secure.served / "server.pem") in failed["error"]
    assert fetch(secure.https_port, pki)[1] == serving  # the old one, still
    _renew(secure, pki)  # leave a good pair for the tests after this one


def _renew(secure, pki) -> int:
    serial = pki.reissue()
    for f in (pki.key, pki.cert):
        shutil.copy(f, secure.served / (f.name + ".new"))
        (secure.served / (f.name + ".new")).replace(secure.served / f.name)
    return serial


@pytest.mark.parametrize("workers", ["1", "2"])
def test_https_without_a_certificate_is_refused_before_anything_listens(tmp_path, workers):
    done = subprocess.run([sys.executable, "-m", "router", "serve", "--zones", "zones",
                           "--no-probe", "--dns", "127.0.0.1:0", "--http", "127.0.0.1:0",
                           "--https", "127.0.0.1:0", "--workers", workers,
                           "--tls-cert", str(tmp_path / "nope.pem"), "--tls-key",
                           str(tmp_path / "nope.key")], cwd=ROOT, capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 1
    assert f"{tmp_path / 'nope.pem'}: no such file (tls_cert, tls_key)" in done.stderr
    assert "worker_started" not in done.stderr and "listening" not in done.stderr
