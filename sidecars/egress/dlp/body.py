"""A request body made into texts to scan: its codings undone (Content-Encoding and
Transfer-Encoding, every listed coding, last applied first), and its structure made visible to
gitleaks' rules: JSON string leaves as ``key = "value"`` lines, form fields as ``name=value``
lines, multipart parts one by one (their own Content-Transfer-Encoding undone, nested
multiparts too). Every parser error is CannotScan: the body is then blocked, never passed."""

from __future__ import annotations

import binascii
import json
import urllib.parse
from collections.abc import Iterable

from .codecs import base64 as b64
from .codecs import compression
from .errors import CannotScan

MAX_MULTIPART_DEPTH = 4
MAX_PARTS = 1000


def header(headers: Iterable[tuple[str, str]], wanted: str) -> str:
    for name, value in headers:
        if name.lower() == wanted:
            return value
    return ""


def codings(headers: Iterable[tuple[str, str]]) -> list[str]:
    """The codings applied to the body, in the order they were applied (Transfer-Encoding's
    after Content-Encoding's), without ``identity`` and ``chunked`` (mitmproxy undoes that)."""
    content, transfer = [], []
    for name, value in headers:
        n = name.lower()
        if n in ("content-encoding", "transfer-encoding"):
            (content if n == "content-encoding" else transfer).extend(
                c.strip().lower() for c in value.split(",") if c.strip()
            )
    return [c for c in content + transfer if c not in ("identity", "chunked")]


def check_codings(cs: list[str]) -> None:
    for c in cs:
        if c not in compression.DECLARED:
            raise CannotScan(f"body: unknown content-encoding {c!r}")


def undo(data: bytes, cs: list[str], cap: int) -> bytes:
    """``data`` with its declared codings undone (strict: a corrupt coding is CannotScan)."""
    check_codings(cs)
    for c in reversed(cs):
        data = compression.inflate(compression.DECLARED[c], data, cap, strict=True)
    return data


def structured_type(ctype: str) -> bool:
    """Whether a body of this content type has a structure ``structured`` reads."""
    mime = ctype.split(";")[0].strip().lower()
    return (
        mime in ("application/json", "application/x-www-form-urlencoded")
        or mime.endswith("+json")
        or mime.startswith("multipart/")
    )


def structured(data: bytes, ctype: str) -> list[tuple[str, bytes]]:
    """(where, text) for the structure of a body of content type ``ctype``."""
    return _structured(data, ctype, "body", 0)


def _structured(data: bytes, ctype: str, where: str, depth: int) -> list[tuple[str, bytes]]:
    mime = ctype.split(";")[0].strip().lower()
    if mime == "application/json" or mime.endswith("+json"):
        return [(f"{where} json", json_lines(data))]
    if mime == "application/x-www-form-urlencoded":
        if not data.isascii():
            # A form encoder sends ASCII only; raw bytes (an upload curl labels a form) get no
            # second, form-split copy: the raw text and its decoded views are scanned as for any body.
            return []
        pairs = urllib.parse.parse_qsl(data.decode("utf-8", "surrogateescape"), keep_blank_values=True)
        return [(f"{where} form", "\n".join(f"{k}={v}" for k, v in pairs).encode("utf-8", "surrogateescape"))]
    if mime.startswith("multipart/"):
        if depth >= MAX_MULTIPART_DEPTH:
            raise CannotScan(f"{where}: multipart nested deeper than {MAX_MULTIPART_DEPTH}")
        out = []
        for i, (head, content) in enumerate(multipart(data, ctype), 1):
            w = f"{where} part {i}"
            out.append((w, head + b"\n" + content))
            cte = _part_header(head, b"content-transfer-encoding").strip().lower()
            if cte in (b"base64", b"quoted-printable"):
                content = _transfer_decode(content, cte, w)
                out.append((w, content))
            pct = _part_header(head, b"content-type").decode("latin-1")
            out += _structured(content, pct, w, depth + 1)
        return out
    return []


def json_lines(data: bytes) -> bytes:
    """Every string leaf as ``key = "value"`` (JSON escapes undone, names next to values)."""
    try:
        doc = json.loads(data)
    except RecursionError:
        raise CannotScan("body json: nested too deeply to parse") from None
    except ValueError:
        return b""  # not JSON after all: the raw text is scanned
    lines: list[str] = []
    stack: list[tuple[object, str]] = [(doc, "")]
    while stack:
        node, path = stack.pop()
        if isinstance(node, dict):
            stack.extend((v, str(k)) for k, v in reversed(list(node.items())))
            for k in node:
                if isinstance(k, str) and "\n" in k:
                    lines.append(k)
        elif isinstance(node, list):
            stack.extend((v, path) for v in reversed(node))
        elif isinstance(node, str):
            lines.append(f'{path} = "{node}"' if path else node)
            if "\n" in node:
                lines.append(node)
    return "\n".join(lines).encode("utf-8", "surrogatepass")


def _param(ctype: str, wanted: str) -> str:
    for param in ctype.split(";")[1:]:
        k, _, v = param.strip().partition("=")
        if k.strip().lower() == wanted:
            return v.strip().strip('"')
    return ""


def multipart(data: bytes, ctype: str) -> list[tuple[bytes, bytes]]:
    """(headers, content) of each part. A body without a usable boundary is CannotScan."""
    boundary = _param(ctype, "boundary")
    if not boundary:
        raise CannotScan("body: multipart without a boundary")
    delim = b"--" + boundary.encode("utf-8", "surrogateescape")
    out = []
    for raw in data.split(delim)[1:]:
        if raw.startswith(b"--"):
            break
        if len(out) >= MAX_PARTS:
            raise CannotScan(f"body: multipart of more than {MAX_PARTS} parts")
        raw = raw[2:] if raw.startswith(b"\r\n") else raw[1:] if raw.startswith(b"\n") else raw
        head, sep, content = raw.partition(b"\r\n\r\n")
        if not sep:
            head, _, content = raw.partition(b"\n\n")
        out.append((head, content.removesuffix(b"\r\n").removesuffix(b"\n")))
    return out


def _part_header(head: bytes, wanted: bytes) -> bytes:
    for line in head.splitlines():
        name, sep, value = line.partition(b":")
        if sep and name.strip().lower() == wanted:
            return value.strip()
    return b""


def _transfer_decode(content: bytes, cte: bytes, where: str) -> bytes:
    try:
        if cte == b"base64":
            return b64.decode(content)
        return binascii.a2b_qp(content)
    except (binascii.Error, ValueError):
        return content  # what does not decode is scanned as it is
