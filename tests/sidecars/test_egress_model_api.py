"""The model's API is a way out too (issue 14, item 11): a Messages API request that turns on
the MCP connector, a server tool or a beta flag for one is refused unless the route's
model_tools names it; the 403 is the API's own error shape and the log line carries the draft.
In-process, and through a real mitmdump in front of the fake Messages API."""

from __future__ import annotations

import gzip
import http.client
import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.support.egress import (
    decisions,
    driven_egress,
    free_port,
    make_flow,
    route_line,
    routes_yaml,
    send,
    start_mitmdump,
    stop_mitmdump,
)

KEY = "sk-ant-real-0123456789abcdef"
AUTH = "{scheme: header, header: x-api-key, token_env: ANTHROPIC_API_KEY}"
NO_BODY_DLP = "{body: false, disabled_rules: [], max_body_bytes: 8388608}"
ROUTES = routes_yaml(
    route_line("api.anthropic.com", auth=AUTH, dlp=NO_BODY_DLP),
    route_line("search.anthropic.example", auth=AUTH, dlp=NO_BODY_DLP, model_tools="[web_search]"),
)
FAKE = Path(__file__).resolve().parents[1] / "integration" / "fake_messages_api.py"
CLIENT_TOOLS = [
    {"name": "Bash", "description": "run", "input_schema": {"type": "object"}},
    {"type": "custom", "name": "Read", "input_schema": {"type": "object"}},
    {"type": "text_editor_20250124", "name": "str_replace_editor"},
]


@pytest.fixture
def egress(tmp_path):
    with driven_egress(tmp_path, ROUTES, {"ANTHROPIC_API_KEY": KEY}) as addon:
        yield addon


def messages(egress, doc, host="api.anthropic.com", path="/v1/messages?beta=true", encode=None, **headers):
    body = json.dumps(doc).encode()
    if encode == "gzip":
        body = gzip.compress(body)
        headers["Content-Encoding"] = "gzip"
    f = make_flow(
        "POST",
        f"https://{host}{path}",
        {"x-api-key": "placeholder", "Content-Type": "application/json", "Content-Length": str(len(body)), **headers},
    )
    f.request.data.content = body
    send(egress, f)
    return f


def refused(f) -> dict:
    assert f.response is not None and f.response.status_code == 403
    assert f.response.headers["content-type"] == "application/json"
    assert f.request.headers["x-api-key"] == "placeholder"
    err = json.loads(f.response.content)
    assert err["type"] == "error" and err["error"]["type"] == "permission_error"
    return err["error"]


def test_ordinary_claude_requests_pass_without_dlp_on_the_conversation(egress, tmp_path) -> None:
    f = messages(
        egress,
        {
            "model": "m",
            "messages": [{"role": "user", "content": "see ghp_" + "a" * 36}],
            "tools": CLIENT_TOOLS,
            "stream": True,
        },
        **{"anthropic-beta": "claude-code-20250219,interleaved-thinking-2025-05-14"},
    )
    assert f.response is None and f.request.headers["x-api-key"] == KEY
    assert decisions(tmp_path)[-1]["decision"] == "allow"
    g = messages(egress, {"model": "m", "messages": []}, path="/v1/messages/count_tokens?beta=true", encode="gzip")
    assert g.response is None


@pytest.mark.parametrize(
    "doc,headers,tool,where",
    [
        (
            {"tools": [*CLIENT_TOOLS, {"type": "web_search_20250305", "name": "web_search", "max_uses": 8}]},
            {},
            "web_search",
            "tools[3]",
        ),
        ({"tools": [{"type": "web_fetch_20250910", "name": "web_fetch"}]}, {}, "web_fetch", "tools[0]"),
        ({"tools": [{"type": "code_execution_20250825", "name": "code_execution"}]}, {}, "code_execution", "tools[0]"),
        (
            {"mcp_servers": [{"type": "url", "url": "https://evil.example/mcp", "name": "x"}]},
            {},
            "mcp_servers",
            "mcp_servers",
        ),
        ({"tools": [{"type": "mcp_toolset", "mcp_server_name": "x"}]}, {}, "mcp_servers", "tools[0]"),
        ({}, {"anthropic-beta": "claude-code-20250219, mcp-client-2025-04-04"}, "mcp_servers", "anthropic-beta[1]"),
        ({}, {"anthropic-beta": "web-fetch-2025-09-10"}, "web_fetch", "anthropic-beta[0]"),
        ({}, {"anthropic-beta": "code-execution-2025-08-25"}, "code_execution", "anthropic-beta[0]"),
    ],
)
def test_server_side_tools_are_refused_with_a_draft_in_the_log(egress, tmp_path, doc, headers, tool, where) -> None:
    f = messages(egress, {"model": "m", "messages": [], **doc}, **headers)
    err = refused(f)
    assert f"model tool {tool} ({where}) is not allowed on route 0" in err["message"]
    entry = decisions(tmp_path)[-1]
    assert entry["decision"] == "block" and entry["route"] == 0
    assert entry["model_tool"] == {"tool": tool, "where": where}
    assert entry["proposal"] == {"kind": "model-tool", "change": {"host": "api.anthropic.com", "tool": tool}}
    assert "evil.example" not in (tmp_path / "requests.jsonl").read_text()


def test_a_server_tool_of_an_unknown_kind_is_refused_everywhere_and_not_echoed(egress, tmp_path) -> None:
    f = messages(
        egress, {"tools": [{"type": "browse_ghp_SECRETISH_20990101", "name": "x"}]}, host="search.anthropic.example"
    )
    err = refused(f)
    assert "unknown kind (tools[0])" in err["message"] and "browse" not in err["message"]
    assert decisions(tmp_path)[-1]["proposal"] is None and "browse" not in (tmp_path / "requests.jsonl").read_text()


def test_a_tool_the_route_names_passes(egress) -> None:
    f = messages(
        egress, {"tools": [{"type": "web_search_20250305", "name": "web_search"}]}, host="search.anthropic.example"
    )
    assert f.response is None and f.request.headers["x-api-key"] == KEY
    g = messages(
        egress, {"tools": [{"type": "web_fetch_20250910", "name": "web_fetch"}]}, host="search.anthropic.example"
    )
    assert refused(g)


# Spellings of the Messages API's path that a lenient server routes to it all the same.
MESSAGES_SPELLINGS = ["//v1/messages", "/v1//messages/", "/V1/Messages", "/v1/%6Dessages", "/%2Fv1/messages%2F"]


@pytest.mark.parametrize("path", MESSAGES_SPELLINGS)
def test_the_tools_check_holds_however_the_path_is_spelled(egress, path) -> None:
    f = messages(egress, {"tools": [{"type": "web_search_20250305", "name": "web_search"}]}, path=path)
    assert refused(f)["message"].startswith("egress: blocked: model tool web_search")


def test_a_batch_is_checked_request_by_request(egress) -> None:
    doc = {
        "requests": [
            {"custom_id": "a", "params": {"tools": CLIENT_TOOLS}},
            {"custom_id": "b", "params": {"mcp_servers": [{"url": "https://x"}]}},
        ]
    }
    err = refused(messages(egress, doc, path="/v1/messages/batches"))
    assert "requests[1].params.mcp_servers" in err["message"]


@pytest.mark.parametrize("raw", [b"not json", b"[" * 5000 + b"]" * 5000, b'{"tools": {"type": "web_search"}}'])
def test_a_messages_body_egress_cannot_read_is_refused(egress, tmp_path, raw) -> None:
    f = make_flow("POST", "https://api.anthropic.com/v1/messages", {"x-api-key": "p", "Content-Length": str(len(raw))})
    f.request.data.content = raw
    send(egress, f)
    assert f.response is not None and f.response.status_code == 403
    assert f.request.headers["x-api-key"] == "p" and decisions(tmp_path)[-1]["failed_closed"] == "model api"


def test_a_large_messages_body_is_buffered_not_streamed(egress) -> None:
    f = make_flow("POST", "https://api.anthropic.com/v1/messages", {"x-api-key": "p", "Content-Length": str(2 << 20)})
    egress.requestheaders(f)
    assert not f.request.stream and f.response is None


def test_real_mitmdump_in_front_of_the_fake_messages_api(tmp_path) -> None:
    up = free_port()
    fake = subprocess.Popen([sys.executable, str(FAKE), str(up)])
    try:
        (tmp_path / "routes.yaml").write_text(
            routes_yaml(route_line("127.0.0.1", up, scheme="http", auth=AUTH, dlp=NO_BODY_DLP))
        )
        proc, port = start_mitmdump(tmp_path, {"ANTHROPIC_API_KEY": KEY})
        try:

            def post(doc):
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
                conn.request(
                    "POST",
                    f"http://127.0.0.1:{up}/v1/messages?beta=true",
                    body=json.dumps(doc).encode(),
                    headers={"x-api-key": "placeholder", "content-type": "application/json"},
                )
                r = conn.getresponse()
                out = r.status, json.loads(r.read())
                conn.close()
                return out

            for _ in range(100):  # the fake starts in the background
                try:
                    http.client.HTTPConnection("127.0.0.1", up, timeout=1).request("HEAD", "/")
                    break
                except OSError:
                    time.sleep(0.05)
            status, doc = post({"model": "m", "messages": [], "tools": CLIENT_TOOLS})
            assert status == 200 and doc["content"][0]["text"] == "pong"
            status, doc = post(
                {"model": "m", "messages": [], "tools": [{"type": "web_search_20250305", "name": "web_search"}]}
            )
            assert status == 403 and "model tool web_search" in doc["error"]["message"]
        finally:
            stop_mitmdump(proc)
        conn = http.client.HTTPConnection("127.0.0.1", up, timeout=5)
        conn.request("GET", "/fake/seen")
        seen = json.loads(conn.getresponse().read())
    finally:
        fake.terminate()
        fake.wait()
    assert [s["tools"] for s in seen] == [[None, "custom", "text_editor_20250124"]]  # the refused one never arrived
