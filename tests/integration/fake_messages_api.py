"""A FAKE of the Anthropic Messages API for tests (no model is reachable from here): runs inside
the agent container on loopback, on the fake internet, or on the test machine's loopback behind
egress, and answers every POST /v1/messages with one short text reply, streamed as server-sent
events when asked. Enough for `claude -p` to run a session end to end. Its `usage` is shaped as
the real API's (input, cache creation with its 5-minute/1-hour split, cache reads; message_delta
repeats the counts, cumulative): USAGE below, the same for every answer, so a test can count.
GET /fake/seen lists what each POST asked for (its path, tool types and whether it had
mcp_servers), so a test can tell what got through. A request header ``x-fake-pause-ms: N`` makes
the stream wait N ms after message_start (a proxy that buffers the stream shows up as a late
first byte); ``x-fake-deltas: N`` streams the reply in N text deltas (a long answer, for benches)."""

import json
import sys
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

REPLY = "pong"
SEEN: list = []
# What every answer reports (a Claude Code turn: a little new input, the rest of the prompt from cache).
USAGE = {
    "input_tokens": 12,
    "cache_creation_input_tokens": 2048,
    "cache_read_input_tokens": 15360,
    "cache_creation": {"ephemeral_5m_input_tokens": 1536, "ephemeral_1h_input_tokens": 512},
    "output_tokens": 87,
    "service_tier": "standard",
}


def events(model: str, pause: float = 0.0, deltas: int = 2):
    start_usage = {**USAGE, "output_tokens": 1}
    msg = {
        "id": "msg_fake",
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": [],
        "stop_reason": None,
        "stop_sequence": None,
        "usage": start_usage,
    }
    yield "message_start", {"type": "message_start", "message": msg}
    if pause:
        time.sleep(pause)
    yield (
        "content_block_start",
        {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}},
    )
    yield "ping", {"type": "ping"}
    parts = (REPLY[:2], REPLY[2:]) if deltas == 2 else [f"{REPLY} {i} " for i in range(deltas)]
    for part in parts:
        yield (
            "content_block_delta",
            {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": part}},
        )
    yield "content_block_stop", {"type": "content_block_stop", "index": 0}
    final = {
        k: USAGE[k] for k in ("input_tokens", "cache_creation_input_tokens", "cache_read_input_tokens", "output_tokens")
    }
    yield (
        "message_delta",
        {"type": "message_delta", "delta": {"stop_reason": "end_turn", "stop_sequence": None}, "usage": final},
    )
    yield "message_stop", {"type": "message_stop"}


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers.get("content-length") or 0)) or b"{}")
        model = body.get("model", "claude-sonnet-4-5-20250929")
        SEEN.append(
            {
                "path": self.path,
                "tools": [t.get("type") for t in body.get("tools") or []],
                "mcp_servers": bool(body.get("mcp_servers")),
                "beta": self.headers.get("anthropic-beta"),
            }
        )
        if "count_tokens" in self.path:
            return self._json({"input_tokens": 1})
        if body.get("stream"):
            self.send_response(200)
            self.send_header("content-type", "text/event-stream")
            self.send_header("connection", "close")
            self.end_headers()
            pause = int(self.headers.get("x-fake-pause-ms") or 0) / 1000
            deltas = max(1, min(10_000, int(self.headers.get("x-fake-deltas") or 2)))
            for name, data in events(model, pause, deltas):
                self.wfile.write(f"event: {name}\ndata: {json.dumps(data)}\n\n".encode())
                self.wfile.flush()
            self.close_connection = True
            return
        self._json(
            {
                "id": "msg_fake",
                "type": "message",
                "role": "assistant",
                "model": model,
                "content": [{"type": "text", "text": REPLY}],
                "stop_reason": "end_turn",
                "stop_sequence": None,
                "usage": USAGE,
            }
        )

    def do_GET(self):
        if self.path == "/fake/seen":
            return self._json(SEEN)
        self._json({"data": [], "has_more": False})

    def do_HEAD(self):
        self.send_response(200)
        self.send_header("content-length", "0")
        self.end_headers()

    def _json(self, doc):
        raw = json.dumps(doc).encode()
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(raw)))
        self.end_headers()
        self.wfile.write(raw)

    def log_message(self, *args):
        pass


if __name__ == "__main__":
    # python3 fake_messages_api.py PORT [ADDRESS]: loopback unless an address is given.
    ThreadingHTTPServer((sys.argv[2] if len(sys.argv) > 2 else "127.0.0.1", int(sys.argv[1])), Handler).serve_forever()
