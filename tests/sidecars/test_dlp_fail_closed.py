"""egress DLP fails closed: no decoder, parser or filter lets an exception escape as anything but
a blocking verdict. Real hostile inputs first (the issue's: JSON nested 1,500 deep, a multipart
boundary that is not latin-1), then a failure injected at each stage of the pipeline."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest

from tests.support.sidecars import egress_module

dlp = egress_module("dlp")
dr = egress_module("dlp.request")
decode = egress_module("dlp.decode")
body = egress_module("dlp.body")
codecs = egress_module("dlp.codecs")
compression = egress_module("dlp.codecs.compression")
archive = egress_module("dlp.codecs.archive")
ordinary = egress_module("dlp.ordinary")

RULES = Path(__file__).parent / "dlp_rules.toml"
GHP = "ghp_" + "aB3dE5fG7hJ9kL1mN3pQ5rS7tU9vW1xY3zA5"
JSON = [("Content-Type", "application/json")]


@pytest.fixture(scope="module")
def rs(tmp_path_factory):
    return dr.RequestScanner(dlp.Scanner.load(RULES, db_path=tmp_path_factory.mktemp("db") / "db"))


def test_deep_json_blocks_instead_of_raising(rs) -> None:
    deep = ("[" * 1500 + '"x"' + "]" * 1500).encode()
    v = rs.scan_body(deep, JSON)
    assert v.blocked and "nested" in v.cannot_scan
    # and with a secret in it, the verdict blocks all the same (never a pass)
    assert rs.scan_body(deep.replace(b'"x"', f'"{GHP}"'.encode()), JSON).blocked


def test_multipart_boundary_beyond_latin1_is_scanned(rs) -> None:
    ctype = [("Content-Type", "multipart/form-data; boundary=\u2603\u00e9b")]
    mp = (
        '--\u2603\u00e9b\r\nContent-Disposition: form-data; name="a"\r\n\r\n' + GHP + "\r\n--\u2603\u00e9b--\r\n"
    ).encode()
    v = rs.scan_body(mp, ctype)
    assert v.blocked and "github-pat" in {h.rule_id for h in v.hits}
    assert rs.scan_body(b"--x\r\n\r\nhello\r\n--x--", [("Content-Type", "multipart/form-data")]).cannot_scan


def _boom(*_a, **_k):
    raise RuntimeError("injected")


STAGES = [
    ("engine", lambda mp, rs: mp.setattr(rs.scanner, "scan", _boom)),
    ("pipeline", lambda mp, rs: mp.setattr(decode, "views", _boom)),
    ("normalise", lambda mp, rs: mp.setattr(codecs.text, "normalise", _boom)),
    ("utf16", lambda mp, rs: mp.setattr(codecs.text, "utf16_whole", _boom)),
    ("inflate", lambda mp, rs: mp.setattr(compression, "inflate", _boom)),
    ("embedded", lambda mp, rs: mp.setattr(compression, "embedded", _boom)),
    ("archive", lambda mp, rs: mp.setattr(archive, "members", _boom)),
    ("codings", lambda mp, rs: mp.setattr(body, "codings", _boom)),
    ("structure", lambda mp, rs: mp.setattr(body, "structured", _boom)),
    ("json", lambda mp, rs: mp.setattr(body, "json_lines", _boom)),
    ("multipart", lambda mp, rs: mp.setattr(body, "multipart", _boom)),
    ("nonces", lambda mp, rs: mp.setattr(ordinary, "nonce_header", _boom)),
] + [(f"codec {c.NAME}", lambda mp, rs, c=c: mp.setattr(c, "pieces", _boom)) for c in codecs.RUN_CODECS]

# A request that reaches every stage: a non-ASCII, NUL-holding multipart JSON body with a gzip
# member, a zip, and a run for every codec; headers of every kind.
_RUNS = "aGVsbG8gd29ybGQgaGVsbG8gd29ybGQ= 68656c6c6f20776f726c6421212121 %41%42 &#65;&#66; =41=42 \\u0041\\n"
BODY_JSON = json.dumps({"note": "caf\u00e9\u200b " + _RUNS}).encode()
MULTIPART = (
    b"--b\r\nContent-Type: application/json\r\n\r\n" + BODY_JSON + b"\r\n"
    b"--b\r\nContent-Type: application/octet-stream\r\n\r\n"
    + gzip.compress(b"hello")
    + b"PK\x03\x04"
    + b"\0" * 30
    + b"h\0e\0l\0l\0o\0 \0w\0o\0r\0l\0d\0"
    + b"\r\n--b--\r\n"
)
HEADERS = [
    ("Content-Type", "multipart/form-data; boundary=b"),
    ("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ=="),
    ("X-Note", "caf\u00e9 " + _RUNS),
]


@pytest.mark.parametrize("stage, inject", STAGES, ids=[s for s, _ in STAGES])
def test_a_failure_at_any_stage_blocks(rs, monkeypatch, stage, inject) -> None:
    assert not rs.scan_request("/x?a=%41", HEADERS, MULTIPART).blocked  # clean without the failure
    inject(monkeypatch, rs)
    v = rs.scan_request("/x?a=%41", HEADERS, MULTIPART)
    assert v.blocked and v.cannot_scan and "injected" not in v.cannot_scan, (stage, v)
    if stage == "nonces":
        return  # headers only
    st = rs.body_stream(HEADERS)
    assert st.feed(MULTIPART) == b"" and st.finish() == b"" and st.verdict.blocked, stage


def test_a_failing_filter_on_a_finding_is_no_pass(rs, monkeypatch) -> None:
    monkeypatch.setattr(ordinary, "public_sample", _boom)
    assert rs.scan_body(GHP.encode(), []).cannot_scan


def test_a_failure_mid_stream_blocks_and_releases_nothing_more(rs, monkeypatch) -> None:
    st = rs.body_stream([("Content-Type", "text/plain")])
    text = b"line of ordinary text\n" * 3000
    sent = st.feed(text)
    assert sent and not st.verdict.blocked
    monkeypatch.setattr(rs.scanner, "scan", _boom)
    assert st.feed(text) == b"" and st.verdict.blocked and st.verdict.cannot_scan
    assert st.feed(b"more") == b"" and st.finish() == b""


def test_scan_text_fails_closed_too(rs, monkeypatch) -> None:
    assert rs.scan_text("GET", "method").blocked is False
    assert rs.scan_text(GHP, "authority").hits[0].where == "authority"
    monkeypatch.setattr(rs.scanner, "scan", _boom)
    assert rs.scan_text("GET", "method").cannot_scan


def test_a_decompression_bomb_is_refused_not_inflated(rs) -> None:
    bomb = gzip.compress(b"\0" * (64 << 20))
    v = rs.scan_body(b"data: " + bomb, [])  # by content: no declared coding
    assert v.blocked and "budget" in v.cannot_scan or "cap" in v.cannot_scan
