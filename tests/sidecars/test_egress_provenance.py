"""Provenance through the addon: a high-entropy value an upstream handed the agent may go back to
that site (or where its redirect pointed) without a DLP hit; anywhere else it is still a secret."""

from __future__ import annotations

import secrets
import string

from mitmproxy import http as mhttp

from tests.support.egress import decisions, driven_egress, make_flow, route_line, routes_yaml, send

ROUTES = routes_yaml(route_line("api.example.com"), route_line("cdn.example.net"), route_line("other.example.org"))


def token() -> str:
    """A random real-shaped GitHub token (a rule of the unit tests' subset finds it)."""
    return "ghp_" + "".join(secrets.choice(string.ascii_letters + string.digits) for _ in range(36))


def answered(addon, url: str, headers: dict[str, str], body: bytes) -> None:
    """One allowed GET to ``url`` whose upstream answers with ``headers`` and ``body`` (as sent:
    already in the content coding the headers name)."""
    f = make_flow("GET", url)
    send(addon, f)
    assert f.response is None, f.response and f.response.content
    f.response = mhttp.Response.make(200, b"", headers)
    f.response.raw_content = body
    f.response.headers["content-length"] = str(len(body))
    addon.responseheaders(f)
    addon.response(f)


def post(addon, url: str, body: str):
    f = make_flow("POST", url, {"content-type": "application/json"})
    f.request.content = body.encode()
    send(addon, f)
    return f


def test_a_token_the_site_handed_out_goes_back_to_it_and_nowhere_else(tmp_path) -> None:
    t = token()
    with driven_egress(tmp_path, ROUTES) as addon:
        assert post(addon, "https://api.example.com/upload", f'{{"token": "{t}"}}').response.status_code == 403
        answered(
            addon,
            "https://api.example.com/auth",
            {"content-type": "application/json"},
            f'{{"token": "{t}", "expires_in": 300}}'.encode(),
        )
        assert post(addon, "https://api.example.com/upload", f'{{"token": "{t}"}}').response is None
        blocked = post(addon, "https://other.example.org/collect", f'{{"token": "{t}"}}')
        assert blocked.response.status_code == 403
        assert t not in blocked.response.text
    assert t not in (tmp_path / "requests.jsonl").read_text()
    assert [d["decision"] for d in decisions(tmp_path)].count("block") == 2


def test_a_redirect_hands_its_token_to_the_site_it_points_at(tmp_path) -> None:
    t = token()
    with driven_egress(tmp_path, ROUTES) as addon:
        answered(addon, "https://api.example.com/release", {"location": f"https://cdn.example.net/file?sig={t}"}, b"")
        f = make_flow("GET", f"https://cdn.example.net/file?sig={t}")
        send(addon, f)
        assert f.response is None
        g = make_flow("GET", f"https://other.example.org/file?sig={t}")
        send(addon, g)
        assert g.response.status_code == 403


def test_the_store_keeps_hashes_never_values(tmp_path) -> None:
    t = token()
    with driven_egress(tmp_path, ROUTES) as addon:
        answered(addon, "https://api.example.com/auth", {"content-type": "text/plain"}, t.encode())
        store = addon.egress.store.dlp.provenance
        assert len(store) >= 1
        assert all(t.encode() not in key[1] and t not in key[0] for key in store._entries)


def test_a_gzip_answer_teaches_its_tokens_without_being_inflated_whole(tmp_path) -> None:
    import gzip

    t = token()
    body = gzip.compress(f'{{"token": "{t}"}}'.encode() + b" " * (50 << 20))  # 50 MiB inflated
    with driven_egress(tmp_path, ROUTES) as addon:
        answered(
            addon,
            "https://api.example.com/auth",
            {"content-type": "application/json", "content-encoding": "gzip"},
            body,
        )
        assert post(addon, "https://api.example.com/upload", f'{{"token": "{t}"}}').response is None
