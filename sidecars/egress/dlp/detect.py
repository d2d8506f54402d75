"""The DLP engine: gitleaks' own rules (its pinned gitleaks.toml) evaluated at wire speed.

gitleaks' Go engine runs every rule's regex over the text (7.7 ms for 10 KB here), too slow for
every request. This module keeps gitleaks v8.30.1's semantics and changes only the engine:

- one Hyperscan database (``database``) holds every rule regex and keyword; a rule whose regex
  and keyword both hit is a candidate;
- google-re2 (Go's regex semantics) runs the candidate's regex to find the matches and the
  secret group, then gitleaks' filters apply: entropy, global and per-rule allowlists
  (regexes on secret/match/line, stopwords, AND/OR conditions; paths and commits never match a
  request, which has neither) and its generic-rule dedupe; ``gitleaks:allow`` on the line only
  without the "no-inline-allow" deviation (``rules.DEVIATIONS``);
- gitleaks' decoding passes (``codecs.gitleaks``) run to the CLI's default depth of 5, and a
  finding in decoded text is located in the original text.

Text is scanned as UTF-8 bytes, offsets are byte offsets as in Go; invalid UTF-8 is replaced by
U+FFFD first (Go's regexes read an invalid byte as U+FFFD too, and Hyperscan's UTF-8 mode needs
valid input). Python's ``re`` is never used for rule regexes: its syntax and ``$`` differ from Go's.
"""

from __future__ import annotations

import bisect
import itertools
import math
import threading
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import hyperscan
import re2

from .codecs._common import non_ascii
from .codecs.gitleaks import (
    _ENDS_PER_BYTE,
    _MAX_ENDS,
    Segment,
    _current_line,
    _overlaps,
    _to_original,
    decode_pass,
    find_all,
)
from .database import (
    CODEC_BASE,
    DECODABLE,
    DECODABLE_ID,
    KEYWORD_BASE,
    SHARED_BASE,
    compile_database,
    database_path,
    load_database,
)
from .rules import DEVIATIONS, RULES_PATH, Rule, Rules, load_rules

MAX_DECODE_DEPTH = 5  # the gitleaks CLI's default --max-decode-depth
ALLOW_SIGNATURE = b"gitleaks:allow"

# Characters whose Go lowercasing / case folding reaches ASCII: KELVIN SIGN folds with k,
# LATIN SMALL LETTER LONG S with s, and Go's ToLower maps U+0130 to a plain i. Hyperscan's
# caseless matching is ASCII-only, so text holding one of them skips the prefilter.
_FOLDS_TO_ASCII = re2.compile(b"\xe2\x84\xaa|\xc5\xbf|\xc4\xb0")
_ASCII_FOLD = {b"\xe2\x84\xaa": b"k", b"\xc5\xbf": b"s", b"\xc4\xb0": b"i"}


def _fold(m: re2._Match) -> bytes:
    return _ASCII_FOLD[m.group(0)]


# --- findings -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Finding:
    """One secret found. ``start``/``end`` are byte offsets of the match in the scanned text,
    ``line`` is 1-based. ``secret`` stays inside egress: never log it, never answer with it."""

    rule_id: str
    start: int
    end: int
    line: int
    secret: bytes
    match: bytes
    decoded: tuple[str, ...] = ()

    def __repr__(self) -> str:  # a stray print or log line must not carry the secret
        return f"Finding(rule_id={self.rule_id!r}, line={self.line}, start={self.start}, end={self.end})"


def _entropy(secret: bytes) -> float:
    s = secret.decode("utf-8", "replace")
    inv = 1.0 / len(secret)
    return -sum(c * inv * math.log2(c * inv) for c in Counter(s).values())


def _location(nl: list[int], raw: bytes, start: int, end: int) -> tuple[int, int, int]:
    """detect.location: (0-based line of the match, startLineIndex, endLineIndex), where a
    line's start index is that of the newline before it, as in gitleaks. gitleaks walks every
    newline; the same answer comes from two bisections of the newline offsets ``nl``."""
    if not nl:
        nl = [len(raw)]
    i_s = bisect.bisect_right(nl, start)  # prev <= start < nl[i_s]
    i_e = bisect.bisect_left(nl, end)  # prev < end <= nl[i_e]
    if i_e < len(nl) and i_e == 0 and end <= 0:
        i_e = len(nl)  # gitleaks' first line starts its end test after offset 0
    if i_s >= len(nl):  # after the last newline: gitleaks' "line not set" path
        i = end
        while i < len(raw) and raw[i] not in (0x0A, 0x0D):
            i += 1
        return len(nl), 0, i
    sl_idx = nl[i_s - 1] if i_s else 0
    el_idx = nl[i_e] if i_s <= i_e < len(nl) else nl[i_s]
    return i_s, sl_idx, el_idx


def _newline_offsets(raw: bytes) -> list[int]:
    return list(itertools.accumulate(len(p) + 1 for p in raw.split(b"\n")[:-1]))


_KIND_NAMES = {1: "percent", 2: "unicode", 4: "hex", 8: "base64"}


def sanitize(data: bytes) -> bytes:
    """Valid UTF-8 for Hyperscan's UTF-8 mode; invalid bytes become U+FFFD as Go reads them."""
    try:
        data.decode("utf-8")
        return data
    except UnicodeDecodeError:
        return data.decode("utf-8", "replace").encode("utf-8")


class Scanner:
    """gitleaks' detector over one rules file. Thread-safe: each thread gets its own Scratch."""

    def __init__(
        self, rules: Rules, db: hyperscan.Database, byte_mode: list[int], max_decode_depth: int = MAX_DECODE_DEPTH
    ):
        self.rules = rules
        self._db = db
        self._byte_mode = byte_mode
        self._local = threading.local()
        self.max_decode_depth = max_decode_depth
        kw_index = {k: i for i, k in enumerate(rules.keywords)}
        self._rule_kw = [frozenset(kw_index[k] for k in r.keywords) for r in rules.rules]
        self._decodable_db = hyperscan.Database(mode=hyperscan.HS_MODE_BLOCK)
        self._decodable_db.compile(
            expressions=DECODABLE, ids=[0] * len(DECODABLE), elements=len(DECODABLE), flags=[0] * len(DECODABLE)
        )
        self._honour_allow = "no-inline-allow" not in rules.deviations
        self._runnable = [r.regex is not None and not r.needs_path and not r.skip_report for r in rules.rules]

    @classmethod
    def load(
        cls,
        rules_path: Path | str = RULES_PATH,
        db_path: Path | str | None = None,
        deviations: tuple[str, ...] | frozenset[str] = DEVIATIONS,
        **kw,
    ) -> Scanner:
        """The rules and their serialized database; compiles the database when it is missing
        or stale (a few seconds), so a scanner always exists when the rules do. ``deviations=()``
        gives gitleaks' own semantics (the parity test's reference)."""
        rules = load_rules(rules_path, deviations)
        dbp = Path(db_path) if db_path else database_path(rules_path)
        loaded = load_database(rules, dbp)
        if loaded is None:
            loaded = compile_database(rules)
        return cls(rules, loaded[0], loaded[1], **kw)

    def _scratch(self) -> hyperscan.Scratch:
        s = getattr(self._local, "scratch", None)
        if s is None:
            s = self._local.scratch = hyperscan.Scratch(self._db)
        return s

    def _decodable_ends(self, data: bytes) -> list[int] | None:
        """End offsets of every _DECODABLE match, or None when there are too many."""
        scratch = getattr(self._local, "dscratch", None)
        if scratch is None:
            scratch = self._local.dscratch = hyperscan.Scratch(self._decodable_db)
        ends: list[int] = []
        limit = _MAX_ENDS + int(len(data) * _ENDS_PER_BYTE)

        def on_match(_id: int, _from: int, to: int, _flags: int, _ctx: object) -> bool:
            ends.append(to)
            return len(ends) > limit  # True stops the scan

        try:
            self._decodable_db.scan(data, match_event_handler=on_match, scratch=scratch)
        except hyperscan.error:
            pass  # stopped by on_match
        return None if len(ends) > limit else ends

    def _candidates(self, data: bytes, disabled: frozenset[str]) -> tuple[list[int], bool]:
        """Indexes of the rules to run with re2, and whether a decoding pass could decode anything.
        The codecs that may find a run in ``data`` are left in ``self.codec_hints``."""
        hits: set[int] = set()

        def on_match(id_: int, _from: int, _to: int, _flags: int, _ctx: object) -> None:
            hits.add(id_)

        self._db.scan(data, match_event_handler=on_match, scratch=self._scratch())
        rules = self.rules.rules
        ascii_only = data.isascii()
        if not ascii_only and any(c in non_ascii(data) for c in _ASCII_FOLD):
            # Go folds these into ASCII letters (K, s, i); Hyperscan does not: scan a copy with
            # them folded too, so keywords and rules seen only through the fold are candidates
            # (re2 confirms on the text as sent). One more Hyperscan pass, not a keyword search
            # per rule: random binary has these bytes every few hundred KiB.
            self._db.scan(_FOLDS_TO_ASCII.sub(_fold, data), match_event_handler=on_match, scratch=self._scratch())
        kws = {h - KEYWORD_BASE for h in hits if KEYWORD_BASE <= h < DECODABLE_ID}
        regex_hit = [h for h in hits if h < KEYWORD_BASE]
        if not ascii_only:
            regex_hit += self._byte_mode  # byte mode counts bytes, Go counts runes
        out = []
        for i in sorted(set(regex_hit)):  # the rules' own order; only those Hyperscan saw
            r = rules[i]
            if not self._runnable[i] or r.id in disabled:
                continue
            if not r.keywords or self._rule_kw[i] & kws:
                out.append(i)
        codecs = {h - (SHARED_BASE if h >= SHARED_BASE else CODEC_BASE) for h in hits if h >= CODEC_BASE}
        self._local.codec_hints = codecs
        return out, DECODABLE_ID in hits or any(h >= SHARED_BASE for h in hits)

    @property
    def codec_hints(self) -> set[int]:
        """Indexes into codecs.RUN_CODECS of the codecs that may find a run in the text this
        thread's last ``scan`` started with (its first pass)."""
        return getattr(self._local, "first_hints", set())

    def scan(self, text: bytes | str, disabled: frozenset[str] | set[str] = frozenset()) -> list[Finding]:
        """Every finding gitleaks would report for this text, in the order gitleaks' rules run.
        ``disabled`` names rule ids not to report (a route's or bottle's exemptions)."""
        raw = sanitize(text.encode() if isinstance(text, str) else bytes(text))
        disabled = frozenset(disabled)
        findings: list[Finding] = []
        current, segments = raw, []
        nl: list[int] | None = None
        cache: dict[bytes, bytes] = {}
        depth = 0
        while True:
            candidates, decodable = self._candidates(current, disabled)
            if depth == 0:
                self._local.first_hints = self._local.codec_hints
            for i in candidates:
                if nl is None:
                    nl = [o - 1 for o in _newline_offsets(raw)]
                findings.extend(self._detect_rule(raw, current, self.rules.rules[i], segments, nl))
            depth += 1
            if depth > self.max_decode_depth or not decodable:
                break
            current, segments = decode_pass(current, segments, cache, self._decodable_ends)
            if not segments:
                break
        return _dedupe_generic(findings)

    def _detect_rule(
        self, raw: bytes, current: bytes, r: Rule, segments: list[Segment], nl: list[int]
    ) -> list[Finding]:
        out = []
        for spans in find_all(r.regex, current):
            ms, me = spans[0]
            secret = current[ms:me].strip(b"\n")
            match = secret
            tags: tuple[str, ...] = ()
            cur_line = b""
            if segments:
                segs = [s for s in segments if _overlaps(s.decoded, (ms, me))]
                if not segs:
                    continue  # found in an earlier pass
                ms, me = _to_original(segs, (ms, me))
                enc = 0
                for s in segs:
                    enc |= s.encodings
                tags = tuple(_KIND_NAMES[k] for k in (1, 2, 4, 8) if enc & k)
                cur_line = _current_line(segs, current)
            else:
                me = ms + len(secret)
            line_no, sl, el = _location(nl, raw, ms, me)
            if me > el:
                el = me
            line = raw[sl:el]
            if self._honour_allow and ALLOW_SIGNATURE in line:
                continue
            if not cur_line:
                cur_line = line
            g = r.regex.search(secret)
            if g is not None and r.regex.groups >= 1:
                if r.secret_group > 0:
                    secret = g.group(r.secret_group) or b""
                else:
                    for k in range(1, r.regex.groups + 1):
                        v = g.group(k)
                        if v:
                            secret = v
                            break
            if r.entropy and (not secret or _entropy(secret) <= r.entropy):
                continue
            if any(a.finding_allowed(secret, match, cur_line) for a in self.rules.allowlists):
                continue
            if any(a.finding_allowed(secret, match, cur_line) for a in r.allowlists):
                continue
            out.append(
                Finding(rule_id=r.id, start=ms, end=me, line=line_no + 1, secret=secret, match=match, decoded=tags)
            )
        return out


def _dedupe_generic(findings: list[Finding]) -> list[Finding]:
    """detect.filter: a generic rule's finding gives way to a specific rule's finding on the
    same line whose secret contains it."""
    out = []
    for f in findings:
        if "generic" in f.rule_id.lower() and any(
            f.line == o.line and f.rule_id != o.rule_id and f.secret in o.secret and "generic" not in o.rule_id.lower()
            for o in findings
        ):
            continue
        out.append(f)
    return out
