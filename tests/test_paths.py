"""Request paths and client addresses: the pure rules behind the redirector."""

from __future__ import annotations

import ipaddress

import pytest

from router.core.config import Config, Service, Target, Zone
from router.core.earth import Point
from router.core.urls import join, mirror_url
from router.http.client import Proxies, client_address, parse_ip
from router.http.routes import MAX_PATH_BYTES, PathError, Routes, check_query, clean

# ---------------------------------------------------------------- clean()


@pytest.mark.parametrize(("raw", "decoded"), [
    ("/", "/"),
    ("/go1.22.5.linux-amd64.tar.gz", "/go1.22.5.linux-amd64.tar.gz"),
    ("/mod/github.com/!azure/go-autorest/@v/list", "/mod/github.com/!azure/go-autorest/@v/list"),
    ("/mod/golang.org/x/text/@v/v0.14.0.zip", "/mod/golang.org/x/text/@v/v0.14.0.zip"),
    ("/a%20b", "/a b"),
    ("/caf%C3%A9", "/café"),
    ("/a/...", "/a/..."),            # three dots is a name, not a traversal
    ("/..a/b..", "/..a/b.."),
    ("/%252e%252e/x", "/%2e%2e/x"),   # decoded once: the literal text %2e%2e, re-encoded later
    ("/a;b=c", "/a;b=c"),
])
def test_clean_accepts_and_decodes_once(raw, decoded):
    assert clean(raw) == decoded


@pytest.mark.parametrize("raw", [
    "/../x", "/a/..", "/%2e%2e/x", "/%2E%2e/x", "/.%2e/x", "/./x", "/a/.", "/..;/x", "/.;x=1/y",
    "//x", "/a//b", "/a%2f%2fb", "/a\\b", "/a%5cb", "/a%00b", "/a%0ab", "/a%0db", "/a%7fb",
    "/a\tb", "/%ff", "/%c0%ae%c0%ae/x", "x", "", "/" + "a" * MAX_PATH_BYTES,
    "/" + "%C3%A9" * 200,  # 1201 encoded bytes
])
def test_clean_rejects(raw):
    with pytest.raises(PathError):
        clean(raw)


def test_path_length_limit_is_on_the_raw_bytes():
    assert clean("/" + "a" * (MAX_PATH_BYTES - 1))
    with pytest.raises(PathError, match="1024"):
        clean("/" + "a" * MAX_PATH_BYTES)


@pytest.mark.parametrize(("query", "ok"), [
    ("go-get=1", True), ("a=%0d%0a", True), ("a=b c", False), ("a=\r\n", False),
    ("x#frag", False), ("\x00", False),
])
def test_query_checks(query, ok):
    if ok:
        assert check_query(query) == query
    else:
        with pytest.raises(PathError):
            check_query(query)


# ---------------------------------------------------------------- mirror_url()


def target(tid: str = "m", url: str | None = "https://m.example.net/golang/",
           country: str | None = "DE") -> Target:
    return Target(id=tid, location=Point(50.0, 8.0), country=country, url=url)


@pytest.mark.parametrize(("rest", "url"), [
    ("go1.22.5.linux-amd64.tar.gz", "https://m.example.net/golang/go1.22.5.linux-amd64.tar.gz"),
    ("github.com/!azure/x/@v/list", "https://m.example.net/golang/github.com/!azure/x/@v/list"),
    ("a b", "https://m.example.net/golang/a%20b"),
    ("%2e%2e/x", "https://m.example.net/golang/%252e%252e/x"),
    ("café", "https://m.example.net/golang/caf%C3%A9"),
    ("a?b#c", "https://m.example.net/golang/a%3Fb%23c"),
    ("", "https://m.example.net/golang/"),
])
def test_mirror_url_is_the_target_url_plus_the_reencoded_path(rest, url):
    assert mirror_url(target().url, rest) == url


@pytest.mark.parametrize(("base", "path", "url"), [
    ("https://m/golang/", "/", "https://m/golang/"),
    ("https://m/golang", "/healthz", "https://m/golang/healthz"),
    ("https://m/golang/", "x/y", "https://m/golang/x/y"),
    ("https://m/", "//x", "https://m/x"),
])
def test_join_never_doubles_or_drops_the_slash_between_base_and_path(base, path, url):
    assert join(base, path) == url


def test_mirror_url_appends_a_passed_query():
    assert mirror_url(target().url, "x", "go-get=1") == "https://m.example.net/golang/x?go-get=1"


# ---------------------------------------------------------------- Routes


def service(name: str, prefix: str | None, dns_names: tuple[str, ...] = ()) -> Service:
    return Service(name=name, origin="", targets=(target(),), http_prefix=prefix,
                   dns_names=dns_names)


def zone(origin: str, *services: Service) -> Zone:
    return Zone(origin=origin, nameservers=("ns.example.net.",), hostmaster="h.example.net.",
                services=services)


ROUTES = Routes(Config((
    zone("go.example.com.", service("root", "/"), service("mod", "/mod/"),
         service("deep", "/mod/deep/")),
    zone("other.example.org.", service("other", "/", dns_names=("dl.other.example.org.",))),
)))


@pytest.mark.parametrize(("path", "host", "name", "rest"), [
    ("/go1.tar.gz", None, "root", "go1.tar.gz"),
    ("/mod/x/@v/list", None, "mod", "x/@v/list"),
    ("/mod", None, "mod", ""),                       # the prefix without its slash
    ("/mod/deep/y", None, "deep", "y"),              # the longest prefix wins
    ("/modx", None, "root", "modx"),                 # "/mod/" is not a prefix of "/modx"
    ("/f", "other.example.org", "other", "f"),       # equal prefixes: the Host picks the zone
    ("/f", "dl.other.example.org:8300", "other", "f"),  # ... by a steered name, with a port
    ("/f", "go.example.com", "root", "f"),
    ("/f", "unknown.example", "root", "f"),          # no match: the first zone
])
def test_routes_match(path, host, name, rest):
    route = ROUTES.match(path, host)
    assert route is not None
    assert (route.service.name, route.rest) == (name, rest)


def test_no_route_without_a_prefix():
    only_dl = Routes(Config((zone("go.example.com.", service("dl", "/dl/"),
                                  service("dns-only", None)),)))
    assert only_dl.match("/x") is None
    assert only_dl.match("/dl/x").rest == "x"
    assert [s.name for s in only_dl.services] == ["dl"]


# ---------------------------------------------------------------- client_address()

TRUSTED = (ipaddress.ip_network("127.0.0.0/8"), ipaddress.ip_network("10.0.0.0/8"),
           ipaddress.ip_network("fd00::/8"))


@pytest.mark.parametrize(("text", "addr"), [
    ("1.2.3.4", "1.2.3.4"), ("1.2.3.4:8080", "1.2.3.4"), ("[2001:db8::1]:443", "2001:db8::1"),
    ("2001:db8::1", "2001:db8::1"), ('"[2001:db8::1]"', "2001:db8::1"),
    ("::ffff:1.2.3.4", "1.2.3.4"), (" 5.6.7.8 ", "5.6.7.8"), ("fe80::1%eth0", "fe80::1"),
    ("unknown", None), ("_hidden", None), ("", None), ("1.2.3", None),
])
def test_parse_ip(text, addr):
    found = parse_ip(text)
    assert (str(found) if found else None) == addr


CLIENTS = [
    ("203.0.113.9", [], ["1.0.16.1"], "203.0.113.9"),          # untrusted peer: headers unread
    ("203.0.113.9", [{"for": "1.0.16.1"}], [], "203.0.113.9"),
    ("127.0.0.1", [], [], "127.0.0.1"),                       # trusted, but names nobody
    ("127.0.0.1", [], ["1.0.16.1"], "1.0.16.1"),
    ("127.0.0.1", [], ["9.9.9.9, 1.0.16.1"], "1.0.16.1"),      # rightmost untrusted wins
    ("127.0.0.1", [], ["1.0.16.1, 10.1.2.3"], "1.0.16.1"),     # a trusted hop is skipped
    ("127.0.0.1", [], ["1.0.16.1", "10.1.2.3"], "1.0.16.1"),   # several headers, in order
    ("127.0.0.1", [], ["10.0.0.1, 10.0.0.2"], "10.0.0.1"),     # all trusted: the leftmost
    ("127.0.0.1", [], ["1.0.16.1, unknown"], "127.0.0.1"),     # unparseable: stop at the proxy
    ("127.0.0.1", [{"for": "[2001:200::1]:4711"}], ["9.9.9.9"], "2001:200::1"),  # Forwarded wins
    ("127.0.0.1", [{"for": "5.9.0.1"}, {"for": "10.9.9.9"}], [], "5.9.0.1"),
    ("127.0.0.1", [{"proto": "https"}], ["8.8.8.8"], "8.8.8.8"),  # no for=: X-Forwarded-For
    ("::ffff:127.0.0.1", [], ["8.8.8.8"], "8.8.8.8"),          # IPv4-mapped peer
    ("fd00::5", [], ["2001:200::1"], "2001:200::1"),
]


@pytest.mark.parametrize(("peer", "forwarded", "xff", "client"), CLIENTS)
def test_client_address(peer, forwarded, xff, client):
    assert str(client_address(peer, TRUSTED, forwarded, xff)) == client


@pytest.mark.parametrize(("peer", "forwarded", "xff", "client"), [
    *CLIENTS,
    ("127.0.0.1", [], ["9.9.9.9, 01.0.16.1"], "127.0.0.1"),    # a leading zero: not an address
    ("127.0.0.1", [], [" 1.0.16.1 "], "1.0.16.1"),
    ("127.0.0.1", [], ["1.0.16.1:8080"], "1.0.16.1"),          # with a port: the long way
    ("127.0.0.1", [], ["2001:200::1"], "2001:200::1"),
    ("127.0.0.1", [], ["::ffff:1.0.16.1"], "1.0.16.1"),
    ("10.1.1.1", [], ["1.0.16.1, 10.9.9.9, 127.0.0.1"], "1.0.16.1"),
])
def test_proxies_name_the_client_as_client_address_does(peer, forwarded, xff, client):
    """The quick way (one X-Forwarded-For ending in a dotted quad) and the long way give
    the same client, as text and as the integer GeoIP is walked with."""
    found = Proxies(TRUSTED).client(peer, forwarded or None, xff)
    expected = client_address(peer, TRUSTED, forwarded, xff)
    assert found is not None and expected is not None
    assert (found.text, found.value, found.version) == (client, int(expected), expected.version)
    assert str(expected) == client


def test_no_trusted_proxies_means_the_peer():
    assert str(client_address("127.0.0.1", (), [], ["1.0.16.1"])) == "127.0.0.1"
    assert client_address(None, TRUSTED, [], ["1.0.16.1"]) is None
