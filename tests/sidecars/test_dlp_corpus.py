"""The adversarial corpus (tests/support/dlp_shapes.py) in process, on gitleaks v8.30.1's full
rules: every exfiltration shape is blocked, every kind of ordinary traffic passes. The same
corpus runs through a real mitmdump in test_egress_corpus_mitmdump.py."""

from __future__ import annotations

import collections

import pytest

from tests.support.dlp_corpus import exfiltration, full_request_scanner, ordinary

EXFIL = exfiltration()
ORDINARY = ordinary()


def scan(case):
    rs = full_request_scanner()
    return rs.scan_text(case.method, "method") + rs.scan_request(case.path, list(case.headers), case.body)


def test_the_corpus_is_as_large_as_promised() -> None:
    assert len(EXFIL) >= 150 and len(ORDINARY) >= 40
    assert len({c.id for c in EXFIL}) == len(EXFIL) and len({c.id for c in ORDINARY}) == len(ORDINARY)
    print(
        "corpus:", dict(collections.Counter(c.cls for c in EXFIL)), dict(collections.Counter(c.cls for c in ORDINARY))
    )


@pytest.mark.parametrize("case", EXFIL, ids=[c.id for c in EXFIL])
def test_exfiltration_is_blocked(case) -> None:
    v = scan(case)
    assert v.blocked, case.id
    assert case.secret not in v.reason() and case.secret not in str(v.to_json())


@pytest.mark.parametrize("case", ORDINARY, ids=[c.id for c in ORDINARY])
def test_ordinary_traffic_passes(case) -> None:
    v = scan(case)
    assert not v.blocked, (case.id, v.reason())
