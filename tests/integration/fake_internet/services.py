"""Package indexes and an LLM API of the tests' fake internet, chosen by the Host header.

- ``pypi.fake.test``: a PEP 503 simple index serving one small wheel (``bottle-probe``), built
  in memory, so `pip install` from inside the agent has something real to install.
- ``registry.fake.test``: an npm registry serving one package (``bottle-probe``): metadata with
  a real sha512 integrity and the tarball.
- ``anthropic.fake.test``: a Messages API that streams one reply (SSE) saying whether the
  ``x-api-key`` it received is the real key (its sha256 is given in ``FAKE_ANTHROPIC_KEY_SHA256``),
  so a test sees that egress injected the real key and the agent only ever held a placeholder.

Each handler returns True when it answered the request.
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import os
import tarfile
import zipfile

PROBE = "bottle-probe"
PROBE_MODULE = "bottle_probe"
PROBE_VERSION = "1.0.0"
PROBE_MESSAGE = "bottle-probe works"


def _wheel() -> tuple[str, bytes]:
    name = f"{PROBE_MODULE}-{PROBE_VERSION}-py3-none-any.whl"
    dist = f"{PROBE_MODULE}-{PROBE_VERSION}.dist-info"
    files = {
        f"{PROBE_MODULE}/__init__.py": f"MESSAGE = {PROBE_MESSAGE!r}\n".encode(),
        f"{dist}/METADATA": f"Metadata-Version: 2.1\nName: {PROBE}\nVersion: {PROBE_VERSION}\n".encode(),
        f"{dist}/WHEEL": b"Wheel-Version: 1.0\nGenerator: bottle-tui-tests\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
    }
    record = []
    for path, data in files.items():
        digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
        record.append(f"{path},sha256={digest},{len(data)}")
    record.append(f"{dist}/RECORD,,")
    files[f"{dist}/RECORD"] = ("\n".join(record) + "\n").encode()
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for path, data in files.items():
            zf.writestr(path, data)
    return name, buf.getvalue()


def _npm_tarball() -> bytes:
    files = {
        "package/package.json": json.dumps({"name": PROBE, "version": PROBE_VERSION, "main": "index.js"}).encode(),
        "package/index.js": f"module.exports = {json.dumps(PROBE_MESSAGE)};\n".encode(),
    }
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tf:
        for path, data in files.items():
            info = tarfile.TarInfo(path)
            info.size = len(data)
            info.mode = 0o644
            tf.addfile(info, io.BytesIO(data))
    return buf.getvalue()


WHEEL_NAME, WHEEL = _wheel()
TARBALL = _npm_tarball()


def _send(handler, status: int, body: bytes, ctype: str, extra: dict[str, str] | None = None) -> bool:
    handler.send_response(status)
    handler.send_header("Content-Type", ctype)
    handler.send_header("Content-Length", str(len(body)))
    for k, v in (extra or {}).items():
        handler.send_header(k, v)
    handler.end_headers()
    if handler.command != "HEAD":
        handler.wfile.write(body)
    return True


def _pypi(handler, path: str) -> bool:
    if path in (f"/simple/{PROBE}/", f"/simple/{PROBE}", f"/simple/{PROBE_MODULE}/"):
        sha = hashlib.sha256(WHEEL).hexdigest()
        html = f'<!DOCTYPE html><html><body><a href="/files/{WHEEL_NAME}#sha256={sha}">{WHEEL_NAME}</a></body></html>'
        return _send(handler, 200, html.encode(), "text/html")
    if path == f"/files/{WHEEL_NAME}":
        return _send(handler, 200, WHEEL, "application/octet-stream")
    return _send(handler, 404, b"not found\n", "text/plain")


def _npm(handler, path: str, scheme_host: str) -> bool:
    tarball_path = f"/{PROBE}/-/{PROBE}-{PROBE_VERSION}.tgz"
    if path == f"/{PROBE}":
        integrity = "sha512-" + base64.b64encode(hashlib.sha512(TARBALL).digest()).decode()
        doc = {
            "name": PROBE,
            "dist-tags": {"latest": PROBE_VERSION},
            "versions": {
                PROBE_VERSION: {
                    "name": PROBE,
                    "version": PROBE_VERSION,
                    "main": "index.js",
                    "dist": {
                        "tarball": scheme_host + tarball_path,
                        "shasum": hashlib.sha1(TARBALL).hexdigest(),
                        "integrity": integrity,
                    },
                }
            },
        }
        return _send(handler, 200, json.dumps(doc).encode(), "application/json")
    if path == tarball_path:
        return _send(handler, 200, TARBALL, "application/octet-stream")
    return _send(handler, 404, b'{"error": "not found"}', "application/json")


def _sse(event: str, data: dict) -> bytes:
    return f"event: {event}\ndata: {json.dumps(data)}\n\n".encode()


def _anthropic(handler, path: str, body: bytes) -> bool:
    if not path.startswith("/v1/messages"):
        return _send(handler, 404, b'{"type": "error"}', "application/json")
    key = handler.headers.get("x-api-key", "")
    expected = os.environ.get("FAKE_ANTHROPIC_KEY_SHA256", "")
    verdict = "key-ok" if expected and hashlib.sha256(key.encode()).hexdigest() == expected else "key-wrong"
    try:
        request = json.loads(body or b"{}")
    except ValueError:
        request = {}
    model = request.get("model", "claude-fake")
    text = f"fake-anthropic says {verdict}"
    message = {
        "id": "msg_fake",
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": [],
        "stop_reason": None,
        "stop_sequence": None,
        "usage": {"input_tokens": 1, "output_tokens": 1},
    }
    if not request.get("stream"):
        message.update(content=[{"type": "text", "text": text}], stop_reason="end_turn")
        return _send(handler, 200, json.dumps(message).encode(), "application/json")
    events = b"".join(
        [
            _sse("message_start", {"type": "message_start", "message": message}),
            _sse(
                "content_block_start",
                {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}},
            ),
            _sse(
                "content_block_delta",
                {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": text}},
            ),
            _sse("content_block_stop", {"type": "content_block_stop", "index": 0}),
            _sse(
                "message_delta",
                {
                    "type": "message_delta",
                    "delta": {"stop_reason": "end_turn", "stop_sequence": None},
                    "usage": {"output_tokens": 5},
                },
            ),
            _sse("message_stop", {"type": "message_stop"}),
        ]
    )
    return _send(handler, 200, events, "text/event-stream", {"Cache-Control": "no-cache"})


def handle(handler, body: bytes, tls: bool) -> bool:
    """Answer ``handler``'s request if its Host is one of the services above."""
    host = handler.headers.get("Host", "").split(":", 1)[0].lower()
    path = handler.path.split("?", 1)[0]
    if host == "pypi.fake.test":
        return _pypi(handler, path)
    if host == "registry.fake.test":
        return _npm(handler, path, ("https://" if tls else "http://") + host)
    if host == "anthropic.fake.test":
        return _anthropic(handler, path, body)
    return False
