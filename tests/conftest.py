from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.harness import Mirror, MirrorFarm, RedisServer, RouterProcess, five_city_zone


@pytest.fixture(scope="session")
def farm() -> Iterator[MirrorFarm]:
    f = MirrorFarm()
    yield f
    f.close()


@pytest.fixture(scope="module")
def city_mirrors(farm: MirrorFarm) -> dict[str, Mirror]:
    """One healthy loopback mirror per city, fresh for each test module."""
    return {tid: farm.mirror(tid) for tid in ("bj", "tyo", "fra", "iad", "gru")}


@pytest.fixture(scope="module")
def five_cities(tmp_path_factory: pytest.TempPathFactory,
                city_mirrors: dict[str, Mirror]) -> Iterator[RouterProcess]:
    """The router serving the five-city zone, probing the loopback mirrors."""
    zones = tmp_path_factory.mktemp("zones")
    (zones / "test.example.com.toml").write_text(five_city_zone(city_mirrors))
    router = RouterProcess(zones, "--trusted-proxy", "127.0.0.1/32")
    yield router
    assert router.stop() == 0


def write_zone(folder: Path, text: str, name: str = "test.example.com.toml") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_text(text)
    return folder


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> Iterator[RedisServer]:
    """A real ``redis-server`` on a loopback port, no persistence: a fleet's store."""
    server = RedisServer(tmp_path_factory.mktemp("redis"))
    yield server
    server.close()
