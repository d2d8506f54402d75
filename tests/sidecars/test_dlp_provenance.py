"""The provenance store (sidecars/egress/dlp/provenance.py) on its own, and through the request
scanner on gitleaks' full rules: a value an upstream handed the agent may go back to that site
(or where its redirect pointed), and nowhere else; the store keeps hashes, never values, and
stays within its bound."""

from __future__ import annotations

import base64
import json
import random
import string
import sys

import pytest

from tests.support.dlp_corpus import full_request_scanner
from tests.support.sidecars import egress_module

prov = egress_module("dlp.provenance")
dr = egress_module("dlp.request")

rng = random.Random(14)
ALNUM = string.ascii_letters + string.digits


def token(n: int = 40) -> str:
    return "".join(rng.choice(ALNUM) for _ in range(n))


def test_learned_values_are_known_for_their_site_only() -> None:
    store = prov.Provenance()
    cursor = token()
    assert (
        store.learn(
            "api.example.com", [("Content-Type", "application/json")], json.dumps({"nextPageToken": cursor}).encode()
        )
        >= 1
    )
    assert store.known("api.example.com", cursor.encode())
    assert store.known("API.Example.com:443", cursor.encode())  # the site, however it is spelled
    assert not store.known("evil.example.net", cursor.encode())
    assert not store.known("api.example.com", token().encode())


def test_a_redirect_target_learns_too() -> None:
    store = prov.Provenance()
    sig = token(64)
    loc = f"https://objects.example-cdn.com/release.tgz?X-Amz-Signature={sig}&X-Amz-Expires=300"
    store.learn("github.example.com", [("Location", loc)])
    assert store.known("objects.example-cdn.com", sig.encode())
    assert store.known("github.example.com", sig.encode())
    assert not store.known("elsewhere.example.org", sig.encode())


def test_low_entropy_and_short_values_are_not_learned() -> None:
    store = prov.Provenance()
    store.learn("a.example", [], b"aaaaaaaaaaaaaaaaaaaaaaaa short Q1w2E3r4 /usr/local/share/aaaaaaaa")
    assert len(store) == 0


def test_the_store_holds_hashes_never_values() -> None:
    store = prov.Provenance()
    secret = token(48)
    store.learn("a.example", [("Location", f"https://a.example/x?t={secret}")])
    dump = repr(store._entries).encode() + b"".join(k[1] for k in store._entries)
    assert secret.encode() not in dump and secret[:16].encode() not in dump


def test_the_store_is_bounded() -> None:
    store = prov.Provenance(max_bytes=64 * prov.ENTRY_BYTES)
    first = token()
    store.add("a.example", first.encode())
    for _ in range(500):
        store.add("a.example", token().encode())
    assert len(store) == 64
    assert not store.known("a.example", first.encode())  # the oldest went first
    # the default bound, and what an entry really costs (so 16 MiB holds what it says)
    assert prov.Provenance().max_entries * prov.ENTRY_BYTES <= 16 << 20
    key = ("a.example", store._digest(b"x" * 20))
    cost = sys.getsizeof(key) + sys.getsizeof(key[1]) + 24 + 16  # tuple, digest, dict slot, order links
    assert cost <= prov.ENTRY_BYTES


@pytest.mark.parametrize(
    "host, site",
    [
        ("API.Example.COM:443", "api.example.com"),
        ("example.com.", "example.com"),
        ("[2001:DB8::1]:8443", "2001:db8::1"),
        ("[::1]", "::1"),
        ("[::1", "[::1"),  # no closing bracket: kept as it is, never an error
        ("2001:db8::1", "2001:db8::1"),  # a bare IPv6 address has no port to cut
        (".example.com", ".example.com"),
    ],
    ids=["port-and-case", "trailing-dot", "ipv6-port", "ipv6", "unclosed", "bare-ipv6", "leading-dot"],
)
def test_sites_are_keyed_by_host_whatever_its_spelling(host: str, site: str) -> None:
    assert prov.site_of(host) == site


def test_tokens_at_the_bounds_are_learned() -> None:
    store = prov.Provenance()
    exact = b"abcdefghABCDEFGH"  # 16 characters (MIN_TOKEN), 4.0 bits each
    flat = b"abcdefghabcdefgh"  # 16 characters of exactly 3.0 bits (MIN_ENTROPY)
    store.learn("a.example", [], exact + b" " + flat)
    assert store.known("a.example", exact) and store.known("a.example", flat)
    assert not store.known("a.example", exact[:15])


def test_a_learned_value_is_known_quoted_and_padded_but_nothing_else_is() -> None:
    store = prov.Provenance()
    value = token(39) + "X"
    store.learn("a.example", [], f"id {value}".encode())
    for seen in (f'"{value}"', f"'{value}'", f"{value}=="):
        assert store.known("a.example", seen.encode()), seen
    assert not store.known("a.example", f'"{token(40)}"'.encode())  # quoted, never learned
    assert not store.known("b.example", f'"{value}"'.encode())


def test_a_dotted_token_at_the_end_of_a_sentence_is_learned_whole() -> None:
    store = prov.Provenance()
    jwt_like = f"{token(20)}.{token(30)}.{token(19)}X"  # a JWT's three parts, as a rule reports it
    store.learn("a.example", [], f"Your session token is {jwt_like}.".encode())
    assert store.known("a.example", jwt_like.encode())


def test_every_learned_header_and_the_body_count() -> None:
    store = prov.Provenance()
    a, b, c, d = token(), token(), token(), token()
    headers = [
        ("Content-Type", "text/plain"),  # not a header tokens come in: skipped, the rest still read
        ("ETag", f'"{a}"'),
        ("Set-Cookie", f"s={b}; Path=/; \udcff"),  # mitmproxy's surrogates
        ("Location", f"https://cdn.example/x?sig={c}"),
    ]
    assert store.learn("a.example", headers, f"next {d}".encode()) >= 4
    assert all(store.known("a.example", t.encode()) for t in (a, b, c, d))
    assert store.known("cdn.example", a.encode())  # the redirect's site learns the response's tokens


def test_stores_of_two_bottles_share_no_digest() -> None:
    v = token().encode()
    assert prov.Provenance()._digest(v) != prov.Provenance()._digest(v)  # keyed per process


def test_the_smallest_store_holds_one_value() -> None:
    store = prov.Provenance(max_bytes=1)
    first, second = token().encode(), token().encode()
    store.add("a.example", first)
    store.add("a.example", second)
    assert len(store) == 1 and store.known("a.example", second) and not store.known("a.example", first)


@pytest.fixture(scope="module")
def rs_prov():
    base = full_request_scanner()
    return dr.RequestScanner(base.scanner, provenance=prov.Provenance())


def test_a_handed_out_token_goes_back_without_a_hit(rs_prov) -> None:
    registry_token = "ghp_" + token(36)  # a token shaped like a secret the registry issued
    url = "/v2/library/alpine/manifests/latest"
    headers = [("Authorization", f"Bearer {registry_token}")]
    assert rs_prov.scan_head(url, headers, site="registry.example.com").blocked  # not learned yet
    rs_prov.provenance.learn(
        "registry.example.com",
        [("Content-Type", "application/json")],
        json.dumps({"token": registry_token, "expires_in": 300}).encode(),
    )
    assert not rs_prov.scan_head(url, headers, site="registry.example.com").blocked
    # to any other site it is a secret still
    assert rs_prov.scan_head(url, headers, site="paste.example.net").blocked
    # and a scan without a site knows no provenance
    assert rs_prov.scan_head(url, headers).blocked


def test_a_presigned_redirect_goes_through(rs_prov) -> None:
    akid = "AKIA" + "".join(rng.choice("ABCDEFGHIJKLMNOPQRSTUVWXYZ234567") for _ in range(16))
    sig = token(64).lower()
    path = (
        f"/bucket/release.tgz?X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential={akid}%2F20261203%2Fus-east-1"
        f"%2Fs3%2Faws4_request&X-Amz-Signature={sig}"
    )
    assert rs_prov.scan_head(path, [], site="s3.example-objects.com").blocked
    rs_prov.provenance.learn("releases.example.com", [("Location", "https://s3.example-objects.com" + path)])
    assert not rs_prov.scan_head(path, [], site="s3.example-objects.com").blocked


def test_basic_auth_of_a_learned_value(rs_prov) -> None:
    v = base64.b64encode(b"x-access-token:" + ("ghp_" + token(36)).encode()).decode()
    assert rs_prov.scan_head("/", [("Authorization", f"Basic {v}")], site="git.example.com").blocked


def test_a_handed_out_cursor_goes_back_in_a_pagination_parameter(rs_prov) -> None:
    # A pagination parameter is judged by every rule but the generic one, and by provenance too:
    # a cursor the site itself handed out goes back to it, and to nowhere else.
    cursor = "glpat-" + token(20)  # shaped like a specific secret, issued by the site as a cursor
    path = f"/api/v4/projects?page_token={cursor}&per_page=100"
    assert rs_prov.scan_head(path, [], site="gitlab.example.com").blocked  # not learned yet
    rs_prov.provenance.learn(
        "gitlab.example.com",
        [("Content-Type", "application/json")],
        json.dumps({"items": [], "next_page_token": cursor}).encode(),
    )
    assert not rs_prov.scan_head(path, [], site="gitlab.example.com").blocked
    assert rs_prov.scan_head(path, [], site="paste.example.net").blocked
