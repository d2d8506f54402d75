"""Every part of a request is checked before injection (issue 14, items 3-6): the method, the
CONNECT target, the authority, the raw query, trailers (buffered and streamed); git pushes go
through the gate; method overrides in bodies, URL-rewriting headers and look-alikes of '.' and
'/' in paths are refused."""

from __future__ import annotations

import pytest
from mitmproxy import http as mhttp
from mitmproxy.test import tflow

from tests.support.egress import decisions, driven_egress, make_flow, route_line, routes_yaml, send
from tests.support.sidecars import egress_module

SECRET = "sk-real-0123456789abcdef"
GHP = "ghp_" + "aB3dE5fG7hJ9kL1mN3pQ5rS7tU9vW1xY3zA5"
AUTH = "{scheme: header, header: x-api-key, token_env: API_KEY}"
ROUTES = routes_yaml(
    route_line("api.example.com", auth=AUTH),
    route_line("*.wild.example.com"),
    route_line("limited.example.com", methods="[GET, POST]", auth=AUTH),
    route_line("git.example.com"),
)
T = egress_module("request_target")


@pytest.fixture
def egress(tmp_path):
    with driven_egress(tmp_path, ROUTES, {"API_KEY": SECRET}) as addon:
        yield addon


def blocked(flow) -> bool:
    return flow.response is not None and flow.response.status_code == 403


def assert_nothing_injected(tmp_path, flow) -> None:
    assert flow.request.headers.get("x-api-key") != SECRET
    assert all(d["decision"] != "allow" for d in decisions(tmp_path))


@pytest.mark.parametrize("method", ["FOO", "PROPFIND", GHP, "get"])
def test_a_method_that_is_not_a_known_http_method_is_refused_and_not_echoed(egress, tmp_path, method) -> None:
    f = make_flow("GET", "https://api.example.com/v1/x", {"x-api-key": "p"})
    f.request.method = method
    send(egress, f)
    assert blocked(f) and b"the method is not one of GET" in f.response.content
    assert method.encode() not in f.response.content
    assert decisions(tmp_path)[-1]["method"] == "" and method not in (tmp_path / "requests.jsonl").read_text()
    assert_nothing_injected(tmp_path, f)


def test_a_secret_in_a_connect_target_is_blocked(egress, tmp_path) -> None:
    f = tflow.tflow()
    f.request = mhttp.Request.make("CONNECT", f"https://{GHP}.wild.example.com:443", b"", {})
    f.request.authority = f"{GHP}.wild.example.com:443"
    egress.http_connect(f)
    assert blocked(f) and b"github-pat in connect target" in f.response.content
    entry = decisions(tmp_path)[-1]
    assert (
        GHP not in (tmp_path / "requests.jsonl").read_text()
        and entry["dlp"]["findings"][0]["where"] == "connect target"
    )
    ok = tflow.tflow()
    ok.request = mhttp.Request.make("CONNECT", "https://a.wild.example.com:443", b"", {})
    egress.http_connect(ok)
    assert ok.response is None


def test_a_secret_in_an_http2_authority_is_blocked(egress, tmp_path) -> None:
    f = make_flow("GET", f"https://{GHP}.wild.example.com/")
    f.request.http_version = "HTTP/2.0"
    f.request.headers.pop("host", None)
    f.request.authority = f"{GHP}.wild.example.com"
    send(egress, f)
    assert blocked(f) and b"github-pat in authority" in f.response.content


def test_the_raw_query_is_scanned(egress, tmp_path) -> None:
    f = make_flow("GET", f"https://a.wild.example.com/p?{GHP}")
    send(egress, f)
    assert blocked(f) and b"in query" in f.response.content


def test_request_trailers_are_scanned_before_anything_is_injected(egress, tmp_path) -> None:
    f = make_flow("POST", "https://api.example.com/v1/x", {"x-api-key": "p", "Content-Length": "2"})
    f.request.data.content = b"ok"
    egress.requestheaders(f)
    f.request.trailers = mhttp.Headers(x_checksum=GHP.encode())
    egress.request(f)
    assert blocked(f) and b"github-pat in trailers" in f.response.content
    assert_nothing_injected(tmp_path, f)


def test_trailers_of_a_streamed_body_with_a_secret_abort_the_request(egress, tmp_path) -> None:
    f = make_flow("POST", "https://a.wild.example.com/up", {"Transfer-Encoding": "chunked"})
    egress.requestheaders(f)
    assert callable(f.request.stream) and f.response is None
    assert f.request.stream(b"x" * 10) == [] and f.request.stream(b"") == [b"x" * 10]
    f.request.trailers = mhttp.Headers(grpc_status=f"0 {GHP}".encode())
    egress.request(f)
    assert f.error is not None and "killed" in f.error.msg.lower()
    assert decisions(tmp_path)[-1]["dlp"]["findings"][0]["where"] == "trailers"


@pytest.mark.parametrize(
    "method,path,headers",
    [
        ("POST", "/org/repo.git/git-receive-pack", {"Content-Type": "application/x-git-receive-pack-request"}),
        ("GET", "/org/repo.git/info/refs?service=git-receive-pack", {}),
        ("GET", "/org/repo.git/info/refs?service=git%2Dreceive%2Dpack", {}),
        ("POST", "/org/repo/git-receive-pack", {}),
        ("POST", "/org/repo", {"Content-Type": "application/x-git-receive-pack-request"}),
    ],
)
def test_git_pushes_are_refused_on_every_route_naming_the_git_gate(egress, tmp_path, method, path, headers) -> None:
    f = make_flow(method, f"https://git.example.com{path}", headers)
    send(egress, f)
    assert blocked(f) and b"git gate" in f.response.content and b"git-receive-pack" in f.response.content


def test_git_fetches_still_pass(egress) -> None:
    for path in ("/org/repo.git/info/refs?service=git-upload-pack", "/org/repo.git/git-upload-pack"):
        f = make_flow("GET", f"https://git.example.com{path}")
        send(egress, f)
        assert f.response is None


@pytest.mark.parametrize(
    "header",
    [
        "X-Original-URL",
        "X-Rewrite-URL",
        "x-forwarded-host",
        "X-Original-URI",
        "X-Envoy-Original-Path",
        "X-Forwarded-Prefix",
    ],
)
def test_headers_that_rewrite_the_url_are_refused(egress, tmp_path, header) -> None:
    f = make_flow("GET", "https://api.example.com/v1/x", {"x-api-key": "p", header: "/admin"})
    send(egress, f)
    assert blocked(f) and b"rewrites the request's URL or host" in f.response.content
    assert_nothing_injected(tmp_path, f)


@pytest.mark.parametrize(
    "ctype,body",
    [
        ("application/x-www-form-urlencoded", b"a=1&_method=DELETE"),
        ("application/x-www-form-urlencoded; charset=utf-8", b"_method=delete"),
        (
            "multipart/form-data; boundary=xx",
            b'--xx\r\nContent-Disposition: form-data; name="_method"\r\n\r\nPUT\r\n--xx--\r\n',
        ),
        ("application/json", b'{"_method": "DELETE", "id": 1}'),
    ],
)
def test_a_method_override_in_the_body_is_held_to_the_routes_methods(egress, tmp_path, ctype, body) -> None:
    f = make_flow(
        "POST",
        "https://limited.example.com/x",
        {"Content-Type": ctype, "Content-Length": str(len(body)), "x-api-key": "p"},
    )
    f.request.data.content = body
    egress.requestheaders(f)
    assert not f.request.stream  # buffered: the body decides
    egress.request(f)
    assert blocked(f) and b"method override" in f.response.content
    assert_nothing_injected(tmp_path, f)


def test_an_allowed_or_absent_override_in_the_body_passes(egress) -> None:
    for body in (b"a=1&_method=GET", b"a=1"):
        f = make_flow(
            "POST",
            "https://limited.example.com/x",
            {"Content-Type": "application/x-www-form-urlencoded", "Content-Length": str(len(body)), "x-api-key": "p"},
        )
        f.request.data.content = body
        send(egress, f)
        assert f.response is None and f.request.headers["x-api-key"] == SECRET


def test_a_form_body_too_large_to_check_for_an_override_is_refused(egress) -> None:
    f = make_flow(
        "POST",
        "https://limited.example.com/x",
        {"Content-Type": "application/x-www-form-urlencoded", "Content-Length": str(9 << 20), "x-api-key": "p"},
    )
    egress.requestheaders(f)
    assert f.response is not None or f.request.host.endswith(".refused.egress.invalid")


@pytest.mark.parametrize(
    "path",
    [
        "/a/%c0%ae%c0%ae/admin",
        "/a/%c0%af",
        "/a/%e0%80%ae",
        "/a/%u002e%u002e/admin",
        "/a/%U002F",
        "/a/\uff0e\uff0e/admin",
        "/a/%ef%bc%8e%ef%bc%8e/admin",
        "/a\uff0fadmin",
        "/a/%e2%88%95admin",
        "/a/\u2044admin",
        "/a/\u2024\u2024/admin",
        "/a/\ufe52\ufe52/admin",
        "/a/\uff3cadmin",
        "/a/%e3%80%82",
    ],
)
def test_look_alikes_of_dot_and_slash_in_paths_are_refused(egress, path) -> None:
    assert T.path_problem(path) is not None
    f = make_flow("GET", "https://api.example.com/v1/x", {"x-api-key": "p"})
    f.request.path = path
    send(egress, f)
    assert blocked(f)


@pytest.mark.parametrize("path", ["/caf%C3%A9", "/na\u00efve/x", "/%E4%B8%AD%E6%96%87", "/v1/a.b/c"])
def test_ordinary_non_ascii_paths_pass(path) -> None:
    assert T.path_problem(path) is None
