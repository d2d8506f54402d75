"""The Hyperscan database over gitleaks' rules: built at image build time (``python -m dlp
compile RULES``), serialized next to the rules file and loaded at start. It holds every rule
regex (SINGLEMATCH: "does this rule match anywhere?"), every keyword (caseless literals) and the
necessary conditions for gitleaks' decoding passes (``DECODABLE``)."""

from __future__ import annotations

import hashlib
import json
import struct
from pathlib import Path

import hyperscan
import re2

from bottle_contract.files import atomic_write

from .codecs import RUN_CODECS
from .rules import Rules

DB_SUFFIX = ".hsdb"
_HS_RULE_FLAGS = hyperscan.HS_FLAG_SINGLEMATCH | hyperscan.HS_FLAG_ALLOWEMPTY
KEYWORD_BASE = 1_000_000  # Hyperscan ids at or above this are keywords, below are rule indexes
DECODABLE_ID = 2_000_000  # any hit with this id: a decoding pass may find something to decode
CODEC_BASE = 3_000_000  # CODEC_BASE + i: egress's codec RUN_CODECS[i] may find a run
# SHARED_BASE + i: a pattern both DECODABLE and codec i's candidates hold, compiled once (four
# base64 quads): a hit is both a DECODABLE_ID hit and a CODEC_BASE + i hit.
SHARED_BASE = 4_000_000
_DB_MAGIC = b"BTLDLP4\n"

# Necessary conditions for gitleaks' decoder to produce a segment, as Hyperscan patterns: when
# none matches, a decoding pass would find nothing, and its run-by-run search (most of a pass's
# cost on code, which is full of 16+ character identifiers) is skipped. Percent, unicode and hex
# runs need their first unit; a base64 run decodes to printable ASCII only if each of its first
# four 4-character quads decodes to three bytes below 0x7f, which bounds the first three
# characters' 6-bit values (v0 < 32, v1 & 15 <= 7, v2 & 3 <= 1).
B64_QUAD = rb"[A-Za-f][A-HQ-Xg-nw-z0-3][ABEFIJMNQRUVYZcdghklopstwx014589][\w/+-]"
DECODABLE = [
    rb"%[0-9A-Fa-f]{2}",
    rb"U\+[a-fA-F0-9]{4}",
    rb"\\[uU][a-fA-F0-9]{4}",
    rb"[0-9A-Fa-f]{32}",
    B64_QUAD * 4,
]


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
            hyperscan.Database().compile(
                expressions=[pat], ids=[i], elements=1, flags=[_HS_RULE_FLAGS | hyperscan.HS_FLAG_UTF8]
            )
            flag = _HS_RULE_FLAGS | hyperscan.HS_FLAG_UTF8
        except hyperscan.error:
            flag = _HS_RULE_FLAGS
            byte_mode.append(i)
        exprs.append(pat)
        ids.append(i)
        flags.append(flag)
    for k, kw in enumerate(rules.keywords):
        exprs.append(re2.escape(kw).encode())
        ids.append(KEYWORD_BASE + k)
        flags.append(hyperscan.HS_FLAG_SINGLEMATCH | hyperscan.HS_FLAG_CASELESS)
    shared = {pat for codec in RUN_CODECS for pat in codec.CANDIDATES} & set(DECODABLE)
    for pat in DECODABLE:
        if pat not in shared:
            exprs.append(pat)
            ids.append(DECODABLE_ID)
            flags.append(hyperscan.HS_FLAG_SINGLEMATCH)
    for c, codec in enumerate(RUN_CODECS):
        for pat in codec.CANDIDATES:
            exprs.append(pat)
            ids.append((SHARED_BASE if pat in shared else CODEC_BASE) + c)
            flags.append(hyperscan.HS_FLAG_SINGLEMATCH | hyperscan.HS_FLAG_DOTALL)
    db = hyperscan.Database(mode=hyperscan.HS_MODE_BLOCK)
    db.compile(expressions=exprs, ids=ids, elements=len(exprs), flags=flags)
    return db, byte_mode


def database_path(rules_path: Path | str) -> Path:
    return Path(str(rules_path) + DB_SUFFIX)


def save_database(rules: Rules, db: hyperscan.Database, byte_mode: list[int], out: Path) -> None:
    header = json.dumps(
        {
            "digest": _digest(rules),
            "byte_mode": byte_mode,
            "hyperscan": hyperscan.__version__ if hasattr(hyperscan, "__version__") else "",
        }
    ).encode()
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
    n = struct.unpack(">I", data[len(_DB_MAGIC) : len(_DB_MAGIC) + 4])[0]
    start = len(_DB_MAGIC) + 4
    header = json.loads(data[start : start + n])
    if header.get("digest") != _digest(rules):
        return None
    try:
        db = hyperscan.loadb(data[start + n :], hyperscan.HS_MODE_BLOCK)
        db.scan(b"", match_event_handler=None, scratch=hyperscan.Scratch(db))
    except hyperscan.error:
        return None  # built for another CPU (Hyperscan databases are platform-specific)
    return db, list(header["byte_mode"])


def _digest(rules: Rules) -> str:
    """Every pattern the database holds, under its id: rules that differ only where the database
    does not look (comments, allowlists, entropy, the deviations that change no regex) share one."""
    parts = [r.pattern.encode() if r.regex is not None else b"" for r in rules.rules]
    parts += [b"\1" + kw.encode() for kw in rules.keywords]
    parts += DECODABLE + [p for codec in RUN_CODECS for p in codec.CANDIDATES]
    return hashlib.sha256(b"\0".join(parts)).hexdigest()
