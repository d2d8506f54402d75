"""The DLP engine: gitleaks' own rules (its pinned gitleaks.toml) evaluated at wire speed.

gitleaks' Go engine runs every rule's regex over the text (7.7 ms for 10 KB here), too slow for
every request. This module keeps gitleaks v8.30.1's semantics and changes only the engine:

- one Hyperscan database holds every rule regex (SINGLEMATCH: "does this rule match anywhere?")
  and every keyword (caseless literals), built at image build time (``python3 dlp.py compile``)
  and loaded at start; a rule whose regex and keyword both hit is a candidate;
- google-re2 (Go's regex semantics) runs the candidate's regex to find the matches and the
  secret group, then gitleaks' filters apply: entropy, global and per-rule allowlists
  (regexes on secret/match/line, stopwords, AND/OR conditions; paths and commits never match a
  request, which has neither), ``gitleaks:allow`` on the line, and its generic-rule dedupe;
- gitleaks' decoding passes (percent, unicode escapes, hex, base64/base64url) run to the CLI's
  default depth of 5, and a finding in decoded text is located in the original text.

Each step mirrors a named piece of gitleaks' Go source (detect/detect.go, detect/location.go,
detect/utils.go, detect/codec/*, config/*) so the parity test against the real binary can hold.
Text is scanned as UTF-8 bytes, offsets are byte offsets as in Go; invalid UTF-8 is replaced by
U+FFFD first (Go's regexes read an invalid byte as U+FFFD too, and Hyperscan's UTF-8 mode needs
valid input). Python's ``re`` is never used for rule regexes: its syntax and ``$`` differ from Go's.
"""

from __future__ import annotations

import bisect
import hashlib
import itertools
import json
import math
import os
import struct
import sys
import threading
import tomllib
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import hyperscan
import re2

from bottle_contract.files import atomic_write

RULES_PATH = Path(os.environ.get("BOTTLE_DLP_RULES", "/opt/gitleaks/gitleaks.toml"))
DB_SUFFIX = ".hsdb"
MAX_DECODE_DEPTH = 5  # the gitleaks CLI's default --max-decode-depth
ALLOW_SIGNATURE = b"gitleaks:allow"

_HS_RULE_FLAGS = hyperscan.HS_FLAG_SINGLEMATCH | hyperscan.HS_FLAG_ALLOWEMPTY
_KEYWORD_BASE = 1_000_000  # Hyperscan ids at or above this are keywords, below are rule indexes
_DECODABLE_ID = 2_000_000  # any hit with this id: a decoding pass may find something to decode
_DB_MAGIC = b"BTLDLP2\n"

# Necessary conditions for gitleaks' decoder to produce a segment, as Hyperscan patterns: when
# none matches, a decoding pass would find nothing, and its run-by-run search (most of a pass's
# cost on code, which is full of 16+ character identifiers) is skipped. Percent, unicode and hex
# runs need their first unit; a base64 run decodes to printable ASCII only if each of its first
# four 4-character quads decodes to three bytes below 0x7f, which bounds the first three
# characters' 6-bit values (v0 < 32, v1 & 15 <= 7, v2 & 3 <= 1).
_B64_QUAD = rb"[A-Za-f][A-HQ-Xg-nw-z0-3][ABEFIJMNQRUVYZcdghklopstwx014589][\w/+-]"
_DECODABLE = [
    rb"%[0-9A-Fa-f]{2}",
    rb"U\+[a-fA-F0-9]{4}",
    rb"\\[uU][a-fA-F0-9]{4}",
    rb"[0-9A-Fa-f]{32}",
    _B64_QUAD * 4,
]

# Characters whose Go lowercasing / case folding reaches ASCII: KELVIN SIGN folds with k,
# LATIN SMALL LETTER LONG S with s, and Go's ToLower maps U+0130 to a plain i. Hyperscan's
# caseless matching is ASCII-only, so text holding one of them skips the prefilter.
_FOLDS_TO_ASCII = (b"\xe2\x84\xaa", b"\xc5\xbf", b"\xc4\xb0")


class RulesError(ValueError):
    """The rules file cannot be used; the message is one line naming the file and rule."""


def _compile(pattern: str, where: str) -> re2._Regexp:
    try:
        return re2.compile(pattern.encode())
    except re2.error as e:
        raise RulesError(f"{where}: regex does not compile: {e}") from None


# --- rules (config/config.go, config/allowlist.go, config/rule.go) -------------------------------

@dataclass
class Allowlist:
    """One gitleaks allowlist. ``has_paths``/``has_commits`` only matter for AND conditions:
    a request has no path and no commit, so such a check is false."""

    condition_and: bool
    regex_target: str  # "" (the secret), "match" or "line"
    regex: re2._Regexp | None
    stopwords: tuple[str, ...]
    stopword_re: re2._Regexp | None
    has_paths: bool
    has_commits: bool
    paths: tuple[str, ...] = ()

    def regex_allowed(self, target: bytes) -> bool:
        if self.regex is None or not target:
            return False
        m = self.regex.search(target)
        # regexMatched: FindString(f) != "", so an empty leftmost match does not count
        return m is not None and m.end() > m.start()

    def contains_stopword(self, secret: bytes) -> bool:
        if self.stopword_re is None or not secret:
            return False
        return self.stopword_re.search(_go_lower(secret)) is not None

    def finding_allowed(self, secret: bytes, match: bytes, line: bytes) -> bool:
        target = match if self.regex_target == "match" else line if self.regex_target == "line" else secret
        if self.condition_and:
            checks = []
            if self.has_commits:
                checks.append(False)
            if self.has_paths:
                checks.append(False)
            if self.regex is not None:
                checks.append(self.regex_allowed(target))
            if self.stopwords:
                checks.append(self.contains_stopword(secret))
            return all(checks)
        return self.regex_allowed(target) or self.contains_stopword(secret)


@dataclass
class Rule:
    id: str
    regex: re2._Regexp | None
    pattern: str
    secret_group: int
    entropy: float
    keywords: tuple[str, ...]
    allowlists: list[Allowlist] = field(default_factory=list)
    skip_report: bool = False
    # A rule with a path runs only on files whose path matches; a request has no path ("").
    needs_path: bool = False


@dataclass
class Rules:
    rules: list[Rule]
    allowlists: list[Allowlist]
    keywords: list[str]
    digest: str  # sha256 of the rules file: the serialized database must match it

    def by_id(self) -> dict[str, Rule]:
        return {r.id: r for r in self.rules}


def _go_lower(b: bytes) -> str:
    s = b.decode("utf-8", "replace")
    if s.isascii():
        return s.lower()
    return s.translate({0x130: "i", 0x212A: "k"}).lower()


def _parse_allowlist(a: dict, where: str) -> Allowlist:
    if not isinstance(a, dict):
        raise RulesError(f"{where}: an allowlist must be a table")
    cond = str(a.get("condition", "")).upper()
    if cond not in ("", "OR", "||", "AND", "&&"):
        raise RulesError(f"{where}: unknown allowlist condition {a.get('condition')!r} (expected 'and', 'or')")
    target = a.get("regexTarget", "")
    if target == "secret":
        target = ""
    if target not in ("", "match", "line"):
        raise RulesError(f"{where}: unknown allowlist regexTarget {target!r} (expected 'match', 'line')")
    regexes = list(a.get("regexes") or [])
    paths = list(a.get("paths") or [])
    commits = list(a.get("commits") or [])
    stopwords = tuple(dict.fromkeys(_go_lower(w.encode()) for w in (a.get("stopwords") or [])))
    if not (regexes or paths or commits or stopwords):
        raise RulesError(f"{where}: an allowlist must contain at least one of commits, paths, regexes, stopwords")
    for i, r in enumerate(regexes):
        _compile(r, f"{where} regexes[{i}]")  # name the bad one before joining them
    # Allowlist.Validate joins the regexes into one alternation
    joined = _compile("(?:" + "|".join(regexes) + ")", where) if regexes else None
    stop_re = _compile("|".join(re2.escape(w) for w in stopwords), where) if stopwords else None
    return Allowlist(condition_and=cond in ("AND", "&&"), regex_target=target, regex=joined,
                     stopwords=stopwords, stopword_re=stop_re, has_paths=bool(paths),
                     has_commits=bool(commits), paths=tuple(paths))


def load_rules(path: Path | str = RULES_PATH) -> Rules:
    """Read a gitleaks.toml the way gitleaks v8.30.1's config.Translate does."""
    path = Path(path)
    try:
        raw = path.read_bytes()
        cfg = tomllib.loads(raw.decode())
    except OSError as e:
        raise RulesError(f"{path}: cannot read the rules file: {e.strerror}") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
        raise RulesError(f"{path}: not valid TOML: {e}") from None
    if cfg.get("extend"):
        raise RulesError(f"{path}: [extend] is not supported: give the full rules file")
    rules: list[Rule] = []
    keywords: dict[str, None] = {}
    seen: set[str] = set()
    for n, vr in enumerate(cfg.get("rules") or []):
        rid = str(vr.get("id", "")).strip()
        where = f"{path}: rule {rid or n}"
        if not rid:
            raise RulesError(f"{path}: rules[{n}]: rule id is missing or empty")
        if rid in seen:
            raise RulesError(f"{where}: duplicate rule id")
        seen.add(rid)
        if vr.get("required"):
            raise RulesError(f"{where}: [[rules.required]] (multi-part rules) is not supported by the DLP engine")
        pattern = vr.get("regex", "")
        if not pattern and not vr.get("path"):
            raise RulesError(f"{where}: both regex and path are empty, this rule would have no effect")
        regex = _compile(pattern, where) if pattern else None
        path_re = _compile(vr["path"], f"{where} path") if vr.get("path") else None
        group = int(vr.get("secretGroup", 0))
        if regex is not None and group > regex.groups:
            raise RulesError(f"{where}: invalid secretGroup {group}, the regex has {regex.groups} groups")
        kws = tuple(k.lower() for k in vr.get("keywords") or [])
        for k in kws:
            keywords[k] = None
        if vr.get("allowlist") and vr.get("allowlists"):
            raise RulesError(f"{where}: [rules.allowlist] cannot be used alongside [[rules.allowlists]]")
        als = ([vr["allowlist"]] if vr.get("allowlist") else []) + list(vr.get("allowlists") or [])
        rules.append(Rule(id=rid, regex=regex, pattern=pattern, secret_group=group,
                          entropy=float(vr.get("entropy", 0.0)), keywords=kws,
                          allowlists=[_parse_allowlist(a, f"{where} allowlist") for a in als],
                          skip_report=bool(vr.get("skipReport")),
                          needs_path=path_re is not None and path_re.search(b"") is None))
    if cfg.get("allowlist") and cfg.get("allowlists"):
        raise RulesError(f"{path}: [allowlist] cannot be used alongside [[allowlists]]")
    global_als: list[Allowlist] = []
    by_id = {r.id: r for r in rules}
    for a in ([cfg["allowlist"]] if cfg.get("allowlist") else []) + list(cfg.get("allowlists") or []):
        al = _parse_allowlist(a, f"{path}: [[allowlists]]")
        targets = a.get("targetRules") or []
        for t in targets:
            if t not in by_id:
                raise RulesError(f"{path}: [[allowlists]] target rule id {t!r} does not exist")
            by_id[t].allowlists.append(al)
        if not targets:
            global_als.append(al)
    return Rules(rules=rules, allowlists=global_als, keywords=list(keywords),
                 digest=hashlib.sha256(raw).hexdigest())


# --- the Hyperscan database (built at image build time) ------------------------------------------

def compile_database(rules: Rules) -> tuple[hyperscan.Database, list[int]]:
    """One block-mode database: rule regexes (UTF-8 mode where Hyperscan can hold them, byte
    mode for the few it calls too large) and caseless keyword literals. Returns it and the
    indexes of the byte-mode rules, which cannot be trusted to prefilter non-ASCII text."""
    exprs, ids, flags, byte_mode = [], [], [], []
    for i, r in enumerate(rules.rules):
        if r.regex is None:
            continue
        pat = r.pattern.encode()
        try:
            hyperscan.Database().compile(expressions=[pat], ids=[i], elements=1,
                                         flags=[_HS_RULE_FLAGS | hyperscan.HS_FLAG_UTF8])
            flag = _HS_RULE_FLAGS | hyperscan.HS_FLAG_UTF8
        except hyperscan.error:
            flag = _HS_RULE_FLAGS
            byte_mode.append(i)
        exprs.append(pat)
        ids.append(i)
        flags.append(flag)
    for k, kw in enumerate(rules.keywords):
        exprs.append(re2.escape(kw).encode())
        ids.append(_KEYWORD_BASE + k)
        flags.append(hyperscan.HS_FLAG_SINGLEMATCH | hyperscan.HS_FLAG_CASELESS)
    for pat in _DECODABLE:
        exprs.append(pat)
        ids.append(_DECODABLE_ID)
        flags.append(hyperscan.HS_FLAG_SINGLEMATCH)
    db = hyperscan.Database(mode=hyperscan.HS_MODE_BLOCK)
    db.compile(expressions=exprs, ids=ids, elements=len(exprs), flags=flags)
    return db, byte_mode


def database_path(rules_path: Path | str) -> Path:
    return Path(str(rules_path) + DB_SUFFIX)


def save_database(rules: Rules, db: hyperscan.Database, byte_mode: list[int], out: Path) -> None:
    header = json.dumps({"digest": rules.digest, "byte_mode": byte_mode,
                         "hyperscan": hyperscan.__version__ if hasattr(hyperscan, "__version__") else ""}).encode()
    blob = hyperscan.dumpb(db)
    atomic_write(out, _DB_MAGIC + struct.pack(">I", len(header)) + header + blob, mode=0o644)


def load_database(rules: Rules, path: Path) -> tuple[hyperscan.Database, list[int]] | None:
    """The serialized database, or None when it is missing or was built from other rules."""
    try:
        data = path.read_bytes()
    except OSError:
        return None
    if not data.startswith(_DB_MAGIC):
        return None
    n = struct.unpack(">I", data[len(_DB_MAGIC):len(_DB_MAGIC) + 4])[0]
    start = len(_DB_MAGIC) + 4
    header = json.loads(data[start:start + n])
    if header.get("digest") != rules.digest:
        return None
    try:
        db = hyperscan.loadb(data[start + n:], hyperscan.HS_MODE_BLOCK)
        db.scan(b"", match_event_handler=None, scratch=hyperscan.Scratch(db))
    except hyperscan.error:
        return None  # built for another CPU (Hyperscan databases are platform-specific)
    return db, list(header["byte_mode"])


# --- decoding passes (detect/codec) --------------------------------------------------------------

_PRINTABLE = bytes(range(9, 127))
_ENCODINGS = [  # kind bit, pattern, in gitleaks' order (earlier = higher precedence)
    (1, rb"%[0-9A-Fa-f]{2}(?:.*%[0-9A-Fa-f]{2})?"),
    (2, rb"(?:(?:U\+[a-fA-F0-9]{4}(?:\s|$))+|(?i)(?:\\{1,2}u[a-fA-F0-9]{4})+)"),
    (4, rb"[0-9A-Fa-f]{32,}"),
    (8, rb"[\w\/+-]{16,}={0,2}"),
]
_ENCODINGS_RE = re2.compile(b"|".join(b"(" + p + b")" for _, p in _ENCODINGS))
_UNANCHORED = re2._Anchor.UNANCHORED
_PRECEDENCE = {kind: len(_ENCODINGS) - i for i, (kind, _) in enumerate(_ENCODINGS)}
_CODEPOINT_RE = re2.compile(rb"U\+([a-fA-F0-9]{4}).?")
_MULTI_CODEPOINT_RE = re2.compile(rb"(?:U\+[a-fA-F0-9]{4}(?:\s|$))+")
_ESCAPE_RE = re2.compile(rb"(?i)\\{1,2}u([a-fA-F0-9]{4})")
_MULTI_ESCAPE_RE = re2.compile(rb"(?i)(?:\\{1,2}u[a-fA-F0-9]{4})+")


def _printable(b: bytes) -> bool:
    return not b.translate(None, _PRINTABLE)


def _decode_percent(v: bytes) -> bytes:
    out = bytearray()
    i, n = 0, len(v)
    while i < n:
        # a "%" followed by two hex digits; anything else is copied as is
        if v[i] == 0x25 and i + 2 < n and v[i + 1] in _HEX_DIGITS and v[i + 2] in _HEX_DIGITS:
            b = int(v[i + 1:i + 3], 16)
            if not (8 < b < 127):
                return b""
            out.append(b)
            i += 3
            continue
        out.append(v[i])
        i += 1
    return bytes(out)


_HEX_DIGITS = frozenset(b"0123456789abcdefABCDEF")


def _decode_hex(v: bytes) -> bytes:
    if len(v) % 2 or not any(c in b"0123456789" for c in v):
        return b""
    try:
        d = bytes.fromhex(v.decode())
    except ValueError:
        return b""
    return d if _printable(d) else b""


def _decode_base64(v: bytes) -> bytes:
    import binascii
    if not any(c in b"0123456789+/-_" for c in v):
        return b""
    # encoding/base64 StdEncoding: padded, alphabet +/; then RawURLEncoding: unpadded, -_
    if len(v) % 4 == 0 and b"-" not in v and b"_" not in v:
        try:
            d = binascii.a2b_base64(v, strict_mode=True)
            if _printable(d):
                return d
        except binascii.Error:
            pass
    if b"=" not in v and b"+" not in v and b"/" not in v and len(v) % 4 != 1:
        try:
            d = binascii.a2b_base64(v.replace(b"-", b"+").replace(b"_", b"/") + b"=" * (-len(v) % 4),
                                    strict_mode=True)
            if _printable(d):
                return d
        except binascii.Error:
            pass
    return b""


def _rune(cp: int) -> bytes:
    if 0xD800 <= cp <= 0xDFFF:  # utf8.EncodeRune writes U+FFFD for surrogates
        cp = 0xFFFD
    return chr(cp).encode()


def _decode_unicode(v: bytes) -> bytes:
    ms = [m.group(0) for m in _MULTI_CODEPOINT_RE.finditer(v)]
    if ms:
        for m in ms:
            parts = [p for p in m.split() if p.startswith(b"U+") and len(p) >= 6]
            runes = []
            for p in parts:
                try:
                    runes.append(_rune(int(p[2:], 16)))
                except ValueError:
                    pass
            dec = b"".join(runes) if runes else m
            if dec and dec != m:
                v = v.replace(m, dec, 1)
        return v
    ms = [m.group(0) for m in _MULTI_ESCAPE_RE.finditer(v)]
    if ms:
        for m in ms:
            esc = [e.group(1) for e in _ESCAPE_RE.finditer(m)]
            dec = b"".join(_rune(int(h, 16)) for h in esc) if esc else m
            if dec and dec != m:
                v = v.replace(m, dec, 1)
        return v
    result = b""
    if _CODEPOINT_RE.search(v):
        result = _individual(v, _CODEPOINT_RE, codepoint=True)
    if not result or _ESCAPE_RE.search(v):
        result = _individual(result if result else v, _ESCAPE_RE, codepoint=False)
    return v if not result or result == v else result


def _individual(data: bytes, pat: re2._Regexp, codepoint: bool) -> bytes:
    ms = list(pat.finditer(data))
    buf = bytearray(data)
    for m in reversed(ms):
        start, end = m.start(), (m.end() if codepoint else m.end(1))
        if codepoint and end != m.end(1) and end < len(buf) and buf[end - 1] == 0x20:
            end -= 1
        buf[start:end] = _rune(int(m.group(1), 16))
    return bytes(buf)


_DECODERS = {1: _decode_percent, 2: _decode_unicode, 4: _decode_hex, 8: _decode_base64}


@dataclass
class Segment:
    """codec.EncodedSegment: where an encoded run was, and where its decoded value now is."""

    predecessors: list[Segment]
    original: tuple[int, int]
    encoded: tuple[int, int]
    decoded: tuple[int, int]
    value: bytes
    encodings: int
    depth: int


def _overlaps(s: tuple[int, int], o: tuple[int, int]) -> bool:
    return o[0] <= s[1] and o[1] >= s[0]


def _merge(s: tuple[int, int], o: tuple[int, int]) -> tuple[int, int]:
    return min(s[0], o[0]), max(s[1], o[1])


def _to_original(preds: list[Segment], decoded: tuple[int, int]) -> tuple[int, int]:
    if not preds:
        return decoded
    encoded = (0, 0)
    for p in preds:
        if not _overlaps(p.decoded, decoded):
            continue
        if p.decoded[0] <= decoded[0] and decoded[1] <= p.decoded[1]:
            return p.original
        m = _merge(p.decoded, decoded)
        over = (m[0] - p.decoded[0], m[1] - p.decoded[1])
        shifted = (p.encoded[0] + over[0], p.encoded[1] + over[1])
        encoded = shifted if encoded[1] == 0 else _merge(encoded, shifted)
    if encoded[1] == 0:
        return decoded
    return _to_original(preds[0].predecessors, encoded)


def find_all(rx: re2._Regexp, data: bytes):
    """Go's Regexp.FindAllIndex over bytes, yielding RE2's span list (whole match, then each
    group; (-1, -1) for a group that did not take part). It calls RE2 directly: google-re2's
    Match objects cost more than the matching on texts with many runs. As in Go, the search
    keeps the whole text as context (``^``, ``\b``) and an empty match right after the previous
    match is dropped."""
    match = rx._regexp.Match
    n = len(data)
    pos, prev_end = 0, -1
    while pos <= n:
        spans = match(_UNANCHORED, data, pos, n)
        s, e = spans[0]
        if s < 0:
            return
        accept = True
        if e == pos:  # empty match: step one rune on
            if s == prev_end:
                accept = False
            pos += _rune_width(data, pos)
        else:
            pos = e
        prev_end = e
        if accept:
            yield spans


def _rune_width(data: bytes, pos: int) -> int:
    if pos >= len(data) or data[pos] < 0x80:
        return 1
    b = data[pos]
    return 2 if b < 0xE0 else 3 if b < 0xF0 else 4


def _encoding_matches(data: bytes) -> list[tuple[int, int, int]]:
    found = []
    for spans in find_all(_ENCODINGS_RE, data):
        for g in range(1, 5):
            if spans[g][0] > -1:
                found.append((_ENCODINGS[g - 1][0], *spans[g]))
                break
    if len(found) == 1:
        return found
    # Runs from one search never overlap, but gitleaks' test counts touching runs as overlapping
    # and drops the one of lower precedence.
    kept = []
    last = len(found) - 1
    for i, (kind, s, e) in enumerate(found):
        if i > 0:
            pk, ps, pe = found[i - 1]
            if ps <= e and pe >= s and _PRECEDENCE[pk] > _PRECEDENCE[kind]:
                continue
        if i < last:
            nk, ns, ne = found[i + 1]
            if ns <= e and ne >= s and _PRECEDENCE[nk] > _PRECEDENCE[kind]:
                continue
        kept.append((kind, s, e))
    return kept


# Past this many decodable-looking spots (2048, plus one per 32 bytes of text), searching the
# whole text for runs is cheaper than collecting the spots.
_MAX_ENDS = 2048
_ENDS_PER_BYTE = 1 / 32


def _runs(data: bytes, decodable_ends) -> list[tuple[int, int, int]]:
    """The runs gitleaks' decoder finds, searched only on the lines where ``decodable_ends``
    (Hyperscan: every end offset of a _DECODABLE pattern, or None when there are too many)
    says a decodable run may be. Exact because no run crosses a newline (the classes and ``.``
    exclude it) unless it is a "U+XXXX" sequence, and text holding "U+" is searched whole;
    runs on two lines cannot touch, so the precedence filter is line-local too; a line without
    such a spot yields no segment whatever its runs are."""
    ends = None if decodable_ends is None or b"U+" in data else decodable_ends(data)
    if ends is None:
        return _encoding_matches(data)
    out = []
    done = 0
    for end in sorted(ends):
        if end <= done:
            continue  # on a line already searched
        start = data.rfind(b"\n", 0, end - 1) + 1
        stop = data.find(b"\n", end - 1)
        stop = len(data) if stop < 0 else stop
        out += [(k, s + start, e + start) for k, s, e in _encoding_matches(data[start:stop])]
        done = stop
    return out


def decode_pass(data: bytes, preds: list[Segment], cache: dict[bytes, bytes],
                decodable_ends=None) -> tuple[bytes, list[Segment]]:
    """codec.Decoder.Decode: one pass replacing every decodable run by its decoded value."""
    segments: list[Segment] = []
    shift = 0
    for kind, s, e in _runs(data, decodable_ends) if data else []:
        enc = data[s:e]
        dec = cache.get(enc)
        if dec is None:
            dec = cache[enc] = _DECODERS[kind](enc)
        if not dec:
            continue
        seg = Segment(predecessors=preds, original=_to_original(preds, (s, e)), encoded=(s, e),
                      decoded=(s + shift, s + shift + len(dec)), value=dec, encodings=kind, depth=1)
        shift += len(dec) - len(enc)
        if preds:
            seg.depth = 1 + preds[0].depth
            for p in preds:
                if _overlaps(seg.encoded, p.decoded):
                    seg.encodings |= p.encodings
        segments.append(seg)
    if not segments:
        return data, segments
    out, pos = [], 0
    for seg in segments:
        out.append(data[pos:seg.encoded[0]])
        out.append(seg.value)
        pos = seg.encoded[1]
    out.append(data[pos:])
    return b"".join(out), segments


def _current_line(segments: list[Segment], raw: bytes) -> bytes:
    dec = segments[0].decoded
    for s in segments[1:]:
        dec = _merge(dec, s.decoded)
    start = raw.rfind(b"\n", 0, dec[0] + 1)
    start = max(start, 0)
    end = raw.find(b"\n", dec[1])
    return raw[start:len(raw) if end < 0 else end]


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

    def __init__(self, rules: Rules, db: hyperscan.Database, byte_mode: list[int],
                 max_decode_depth: int = MAX_DECODE_DEPTH):
        self.rules = rules
        self._db = db
        self._byte_mode = byte_mode
        self._local = threading.local()
        self.max_decode_depth = max_decode_depth
        kw_index = {k: i for i, k in enumerate(rules.keywords)}
        self._rule_kw = [frozenset(kw_index[k] for k in r.keywords) for r in rules.rules]
        self._decodable_db = hyperscan.Database(mode=hyperscan.HS_MODE_BLOCK)
        self._decodable_db.compile(expressions=_DECODABLE, ids=[0] * len(_DECODABLE), elements=len(_DECODABLE),
                                   flags=[0] * len(_DECODABLE))
        self._runnable = [r.regex is not None and not r.needs_path and not r.skip_report for r in rules.rules]

    @classmethod
    def load(cls, rules_path: Path | str = RULES_PATH, db_path: Path | str | None = None, **kw) -> Scanner:
        """The rules and their serialized database; compiles the database when it is missing
        or stale (a few seconds), so a scanner always exists when the rules do."""
        rules = load_rules(rules_path)
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
        """Indexes of the rules to run with re2, and whether a decoding pass could decode anything."""
        hits: set[int] = set()

        def on_match(id_: int, _from: int, _to: int, _flags: int, _ctx: object) -> None:
            hits.add(id_)

        self._db.scan(data, match_event_handler=on_match, scratch=self._scratch())
        rules = self.rules.rules
        ascii_only = data.isascii()
        if not ascii_only and any(f in data for f in _FOLDS_TO_ASCII):
            # Go folds these into ASCII letters; Hyperscan does not: let re2 and keywords decide
            lowered = _go_lower(data)
            kws = {i for i, k in enumerate(self.rules.keywords) if k in lowered}
            regex_hit = set(range(len(rules)))
        else:
            kws = {h - _KEYWORD_BASE for h in hits if _KEYWORD_BASE <= h < _DECODABLE_ID}
            regex_hit = hits
            if not ascii_only:
                regex_hit = hits | set(self._byte_mode)  # byte mode counts bytes, Go counts runes
        out = []
        for i, r in enumerate(rules):
            if i not in regex_hit or not self._runnable[i] or r.id in disabled:
                continue
            if not r.keywords or self._rule_kw[i] & kws:
                out.append(i)
        return out, _DECODABLE_ID in hits

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

    def _detect_rule(self, raw: bytes, current: bytes, r: Rule, segments: list[Segment],
                     nl: list[int]) -> list[Finding]:
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
            if ALLOW_SIGNATURE in line:
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
            out.append(Finding(rule_id=r.id, start=ms, end=me, line=line_no + 1, secret=secret,
                               match=match, decoded=tags))
        return out


def _dedupe_generic(findings: list[Finding]) -> list[Finding]:
    """detect.filter: a generic rule's finding gives way to a specific rule's finding on the
    same line whose secret contains it."""
    out = []
    for f in findings:
        if "generic" in f.rule_id.lower() and any(
                f.line == o.line and f.rule_id != o.rule_id and f.secret in o.secret
                and "generic" not in o.rule_id.lower() for o in findings):
            continue
        out.append(f)
    return out


def main(argv: list[str]) -> int:
    """``dlp.py compile RULES [OUT]`` builds the database at image build time;
    ``dlp.py scan RULES FILE...`` prints findings as JSON lines (rule, line, secret: for tests)."""
    if len(argv) >= 2 and argv[0] == "compile":
        rules = load_rules(argv[1])
        db, byte_mode = compile_database(rules)
        out = Path(argv[2]) if len(argv) > 2 else database_path(argv[1])
        save_database(rules, db, byte_mode, out)
        print(f"dlp: {len(rules.rules)} rules, {len(rules.keywords)} keywords, "
              f"{len(byte_mode)} in byte mode -> {out}")
        return 0
    if len(argv) >= 3 and argv[0] == "scan":
        scanner = Scanner.load(argv[1])
        for name in argv[2:]:
            for f in scanner.scan(Path(name).read_bytes()):
                print(json.dumps({"file": name, "rule": f.rule_id, "line": f.line,
                                  "secret": f.secret.decode("utf-8", "replace")}))
        return 0
    print("usage: dlp.py compile RULES [OUT] | dlp.py scan RULES FILE...", file=sys.stderr)
    return 2


if __name__ == "__main__":
    try:
        sys.exit(main(sys.argv[1:]))
    except RulesError as e:
        print(f"dlp: {e}", file=sys.stderr)
        sys.exit(1)
