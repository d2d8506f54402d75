"""The decoding pipeline: what the engine scans besides the text itself.

Normalisation first (invisible characters removed, NFKC, UTF-16 read as text), then each codec
(``codecs/``) over the runs it can decode, recursively, to ``MAX_DEPTH`` levels and a total
size budget; compressed data and archives are inflated wherever they start. A decoder that
fails on part of a run decodes what it can, and the raw text is always scanned as well, so a
view only ever adds. Cheap on text with nothing encoded: one Hyperscan pass over every codec's
necessary conditions (``CANDIDATES``) picks the codecs that may find a run; the others never
look.

``views(data)`` answers ``[(origin, text)]``: ``origin`` is the offset in ``data`` the view
came from (its first run), or -1 for a view of the whole text with its lines kept.
"""

from __future__ import annotations

import threading

import hyperscan

from .codecs import RUN_CODECS, archive, compression, text
from .codecs._common import non_ascii
from .errors import CannotScan

MAX_DEPTH = 6  # levels of decoding egress undoes (gitleaks' own passes add theirs in each view)

_local = threading.local()
_db: hyperscan.Database | None = None
_db_lock = threading.Lock()


def _database() -> hyperscan.Database:
    """The codecs' CANDIDATES alone, for decoded views (the raw text's come with the engine's
    own scan: ``Scanner.codec_hints``)."""
    global _db
    with _db_lock:
        if _db is None:
            exprs, ids = [], []
            for i, codec in enumerate(RUN_CODECS):
                exprs += codec.CANDIDATES
                ids += [i] * len(codec.CANDIDATES)
            db = hyperscan.Database(mode=hyperscan.HS_MODE_BLOCK)
            db.compile(
                expressions=exprs,
                ids=ids,
                elements=len(exprs),
                flags=[hyperscan.HS_FLAG_SINGLEMATCH | hyperscan.HS_FLAG_DOTALL] * len(exprs),
            )
            _db = db
        return _db


def candidates(data: bytes) -> set[int]:
    """Which codecs (indexes into RUN_CODECS) may find a run in ``data``."""
    db = _database()
    scratch = getattr(_local, "scratch", None)
    if scratch is None:
        scratch = _local.scratch = hyperscan.Scratch(db)
    hits: set[int] = set()

    def on_match(id_: int, _from: int, _to: int, _flags: int, _ctx: object) -> None:
        hits.add(id_)

    db.scan(data, match_event_handler=on_match, scratch=scratch)
    return hits


def budget_for(size: int) -> int:
    """How many decoded bytes a text of ``size`` bytes may produce in all: past it, CannotScan."""
    return max(4 * size, 1 << 20)


def _level(data: bytes, room: int, hints: set[int] | None) -> list[tuple[int, bytes]]:
    """One level of decoding over ``data``: every view it yields, with its offset in ``data``."""
    out: list[tuple[int, bytes]] = []
    kind = compression.sniff(data)
    if kind is not None:
        out.append((0, compression.inflate(kind, data, room)))
    elif archive.is_tar(data):
        out += [(0, m) for m in archive.members(data, room)]
    if not data.isascii():
        rest = non_ascii(data)  # asked of by both checks below
        norm = text.normalise(data, rest)
        if norm is not None:
            out.append((-1, norm))
        out += [(o, d) for o, d in compression.embedded(data, room, rest) if o > 0]
    elif b"BZh" in data:
        out += [(o, d) for o, d in compression.embedded(data, room) if o > 0]
    if b"\0" in data:
        wide = text.utf16_whole(data)
        if wide is not None:
            out.append((-1, wide))
    if b"PK\x03\x04" in data:
        out += [(data.find(b"PK\x03\x04"), m) for m in archive.members(data, room)]
    for i in sorted(candidates(data) if hints is None else hints):
        out += RUN_CODECS[i].pieces(data)
    return out


def views(data: bytes, hints: set[int] | None = None, budget: int | None = None) -> list[tuple[int, bytes]]:
    """Every decoded view of ``data`` (not ``data`` itself), breadth first, to MAX_DEPTH.
    ``hints``: the codecs that may find a run in ``data``, when the caller knows already."""
    budget = budget_for(len(data)) if budget is None else budget
    out: list[tuple[int, bytes]] = []
    seen = {data}
    total = 0
    frontier: list[tuple[int | None, bytes]] = [(None, data)]
    for depth in range(MAX_DEPTH):
        nxt: list[tuple[int | None, bytes]] = []
        for origin, t in frontier:
            for off, piece in _level(t, budget - total, hints if depth == 0 else None):
                if not piece or piece in seen:
                    continue
                seen.add(piece)
                total += len(piece)
                if total > budget:
                    raise CannotScan(f"decoding past the {budget}-byte budget (nested or compressed data)")
                nxt.append((off if origin is None else origin, piece))
        out += [(o if o is not None else -1, p) for o, p in nxt]
        frontier = nxt
        if not frontier:
            break
    return out
