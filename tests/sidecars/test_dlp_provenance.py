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
