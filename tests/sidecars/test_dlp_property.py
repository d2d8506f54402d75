"""Property: for any stack of up to three supported encodings of a random real-shaped secret,
placed in any scanned part of a request, egress DLP (gitleaks v8.30.1's full rules) blocks it."""

from __future__ import annotations

import json
import os
import random
import urllib.parse

from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from tests.support.dlp_corpus import ENCODERS, SECRET_MAKERS, full_request_scanner

PLACES = ["body text", "body json", "body form", "header", "query", "path"]
_TEXTUAL = {k for k in ENCODERS if k not in ("gzip", "zlib", "bzip2", "xz", "zstd")}


def _request(place: str, data: bytes):
    """(path, headers, body) carrying ``data`` in ``place``, as a client would write it."""
    if place == "body text":
        return "/upload", [("Content-Type", "text/plain")], b"payload: " + data + b"\n"
    if place == "body json":
        return "/upload", [("Content-Type", "application/json")], json.dumps({"v": data.decode("latin-1")}).encode()
    if place == "body form":
        return (
            "/upload",
            [("Content-Type", "application/x-www-form-urlencoded")],
            b"a=1&v=" + urllib.parse.quote_from_bytes(data).encode(),
        )
    if place == "header":
        return "/", [("X-Data", data.decode("latin-1"))], b""
    if place == "query":
        return "/q?v=" + urllib.parse.quote_from_bytes(data, safe=""), [], b""
    return "/files/" + urllib.parse.quote_from_bytes(data, safe="") + "/x", [], b""


# derandomize: CI judges the same 300 examples every run (a random run that finds a gap is a
# new case for the corpus, not a flaky CI); BOTTLE_DLP_EXPLORE=1 draws new examples each run.
@settings(
    max_examples=300,
    deadline=None,
    derandomize=not os.environ.get("BOTTLE_DLP_EXPLORE"),
    suppress_health_check=[HealthCheck.too_slow],
)
@given(
    rule=st.sampled_from(sorted(SECRET_MAKERS)),
    seed=st.integers(0, 2**32),
    stack=st.lists(st.sampled_from(sorted(ENCODERS)), min_size=0, max_size=3),
    place=st.sampled_from(PLACES),
)
def test_any_stack_of_encodings_anywhere_is_blocked(rule, seed, stack, place) -> None:
    secret = SECRET_MAKERS[rule](random.Random(seed))
    data = secret.encode()
    for enc in stack:
        data = ENCODERS[enc](data)
    if stack and stack[-1] not in _TEXTUAL and place != "body text":
        data = ENCODERS["base64"](data)  # binary leaves as text outside a raw body, as a client sends it
    # a header cannot hold a line break or a NUL; a client sends such data in another place
    assume(place != "header" or not any(c in data for c in b"\r\n\0"))
    path, headers, body = _request(place, data)
    v = full_request_scanner().scan_request(path, headers, body)
    assert v.blocked, (rule, stack, place)
