"""Provenance: values an upstream handed the agent may go back to that site.

A pagination cursor, a presigned URL's signature, a registry's bearer token, a ``Location``
that a release download redirects to: high-entropy values the agent did not make but was given,
which gitleaks' rules cannot tell from a secret. The store keeps, per bottle, a keyed hash of
each such token per site (never the value), and a hit whose secret was learned from the request's
site, or from a site whose redirect pointed there, is not a hit.

A bottle's egress is several processes (workers); a token one of them handed out may come back
through another. With ``shared`` (the workers' run folder, a tmpfs of the bundle), the store's
key is the folder's, every entry learned is also appended to the folder's log (one write per
response, under the log's cap), and a worker reads what the others appended before it answers
``known``. Without it the store is this process's alone.

Bounded: at most ``max_bytes`` (16 MiB by default) of entries, oldest first out, in memory; the
shared log holds as many in each of its two generations. Thread-safe.

    store = Provenance(shared=run_dir)
    store.learn(site, headers, body)          # from a response, before the agent sees it
    store.known(site, secret) -> bool         # at scan time, for one finding's secret
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import re
import threading
import urllib.parse
from collections import Counter, OrderedDict
from collections.abc import Iterable

from bottle_contract.files import append_line, atomic_write, locked

DEFAULT_MAX_BYTES = 16 << 20
ENTRY_BYTES = 192  # what one entry costs in the store (key tuple, digest, dict slot and order links)
MIN_TOKEN = 16  # shorter values are no secrets a rule reports with confidence, and too cheap to guess
MIN_ENTROPY = 3.0  # bits per character: below it a value is no token worth remembering
MAX_LEARN_BYTES = 1 << 20  # of a response body, read for tokens

# A token: a run of the characters tokens, keys, signatures and base64 are made of.
_TOKEN = re.compile(rb"[A-Za-z0-9_\-+/=.~%]{16,4096}")
_SPLIT = re.compile(rb"[./=&?:~]+|%2[Ff]|%3[Dd]")
_LOCATION_HEADERS = frozenset({"location", "content-location", "link", "www-authenticate"})
_LEARN_HEADERS = _LOCATION_HEADERS | {"set-cookie", "x-amz-request-id", "etag", "x-next-token"}
# The shared folder's files: the key every worker hashes with, its lock, the log of entries.
KEY_FILE = "provenance.key"
KEY_LOCK = "provenance.lock"
LOG_FILE = "provenance.jsonl"
LOG_LINE_BYTES = 56  # what one entry takes in the log: ["<site>","<32 hex digits>"] and a newline


def site_of(host: str) -> str:
    """The key sites are stored under: a host name, lowercased, without port or trailing dot."""
    h = host.strip().lower()
    if h.startswith("["):
        h = h[1 : h.find("]")] if "]" in h else h
    elif h.count(":") == 1:
        h = h.split(":", 1)[0]
    return h.rstrip(".")


def _entropy(b: bytes) -> float:
    n = len(b)
    return -sum(c / n * math.log2(c / n) for c in Counter(b).values())


def tokens(data: bytes) -> set[bytes]:
    """The high-entropy tokens in ``data``, and the pieces a rule may report of each (split at
    ``.``, ``/``, ``=``, percent-decoded)."""
    out: set[bytes] = set()
    for m in _TOKEN.finditer(data):
        run = m.group(0)
        forms = {run, run.strip(b"=."), urllib.parse.unquote_to_bytes(run)}
        for f in list(forms):
            forms.update(_SPLIT.split(f))
        for f in forms:
            if len(f) >= MIN_TOKEN and _entropy(f) >= MIN_ENTROPY:
                out.add(f)
    return out


def _shared_key(folder: str) -> bytes:
    """The workers' key: made by the first of them, read by the others."""
    os.makedirs(folder, mode=0o700, exist_ok=True)
    path = os.path.join(folder, KEY_FILE)
    with locked(os.path.join(folder, KEY_LOCK)):
        try:
            with open(path, "rb") as f:
                key = f.read()
            if len(key) == 16:
                return key
        except FileNotFoundError:
            pass
        key = os.urandom(16)
        atomic_write(path, key, mode=0o600)
        return key


class Provenance:
    """The per-bottle store. ``max_bytes`` bounds it (entries x ENTRY_BYTES); ``shared`` is the
    workers' folder (see the module docstring)."""

    def __init__(self, max_bytes: int = DEFAULT_MAX_BYTES, shared: str | None = None):
        self.max_entries = max(1, max_bytes // ENTRY_BYTES)
        # Per process, or per bundle when shared: the stored hashes say nothing outside it.
        self._key = _shared_key(shared) if shared else os.urandom(16)
        self._entries: OrderedDict[tuple[str, bytes], None] = OrderedDict()
        self._lock = threading.Lock()
        self._log = os.path.join(shared, LOG_FILE) if shared else None
        self._log_cap = max(4096, self.max_entries * LOG_LINE_BYTES)
        self._read_at: tuple[int, int] = (-1, 0)  # (inode, offset) of the shared log read so far

    def __len__(self) -> int:
        return len(self._entries)

    def _digest(self, value: bytes) -> bytes:
        return hashlib.blake2b(value, digest_size=16, key=self._key).digest()

    def _keep(self, key: tuple[str, bytes]) -> None:
        self._entries[key] = None
        self._entries.move_to_end(key)
        while len(self._entries) > self.max_entries:
            self._entries.popitem(last=False)

    def add(self, site: str, value: bytes) -> None:
        """Remember one value as handed out by ``site``."""
        self._add_all([(site_of(site), value)])

    def _add_all(self, pairs: list[tuple[str, bytes]]) -> None:
        keys = [(s, self._digest(v)) for s, v in pairs]
        with self._lock:
            for key in keys:
                self._keep(key)
        if self._log is None or not keys:
            return
        lines = [json.dumps([s, d.hex()]).encode() for s, d in keys]
        # One write per batch, each well under the cap: the other workers read whole lines.
        step = max(1, (self._log_cap // 8) // LOG_LINE_BYTES)
        for i in range(0, len(lines), step):
            try:
                append_line(self._log, b"\n".join(lines[i : i + step]), max_bytes=self._log_cap, keep=1)
            except (OSError, ValueError):
                return  # known to this worker only; the others may still flag it

    def _catch_up(self) -> None:
        """Read what the other workers appended to the shared log since the last look (the rest
        of a generation that was rotated away included). Called with the lock held."""
        if self._log is None:
            return
        try:
            inode = os.stat(self._log).st_ino
        except FileNotFoundError:
            inode = -1
        read_inode, offset = self._read_at
        if inode != read_inode and read_inode != -1:
            with contextlib.suppress(OSError):
                older = self._log + ".1"
                if os.stat(older).st_ino == read_inode:
                    self._read_lines(older, offset)
            offset = 0
        if inode == -1:
            self._read_at = (-1, 0)
            return
        self._read_at = (inode, self._read_lines(self._log, offset))

    def _read_lines(self, path: str, offset: int) -> int:
        """The whole lines of ``path`` from ``offset`` into the store; the offset after them."""
        try:
            with open(path, "rb") as f:
                f.seek(offset)
                data = f.read()
        except OSError:
            return offset
        end = data.rfind(b"\n") + 1
        for line in data[:end].splitlines():
            try:
                site, digest = json.loads(line)
                self._keep((str(site), bytes.fromhex(digest)))
            except (ValueError, TypeError):
                continue
        return offset + end

    def learn(self, site: str, headers: Iterable[tuple[str, str]] = (), body: bytes | None = None) -> int:
        """Remember the tokens of one response from ``site``: its headers (``Location`` and the
        like also for the site they point to: the agent follows a redirect there) and the first
        MAX_LEARN_BYTES of its body (decoded: give it after content-encoding is undone).
        Returns how many tokens were learned."""
        sites = {site_of(site)}
        found: set[bytes] = set()
        for name, value in headers:
            n = name.strip().lower()
            if n not in _LEARN_HEADERS:
                continue
            v = value.encode("utf-8", "surrogateescape")
            found |= tokens(v)
            if n in _LOCATION_HEADERS:
                for url in re.findall(r"https?://[^\s,<>\"']+", value):
                    host = urllib.parse.urlsplit(url).hostname
                    if host:
                        sites.add(site_of(host))
        if body:
            found |= tokens(bytes(body[:MAX_LEARN_BYTES]))
        self._add_all([(s, t) for s in sites for t in found])
        return len(found)

    def known(self, site: str, value: bytes) -> bool:
        """Whether ``value`` (a finding's secret) was handed to the agent by ``site``."""
        key = (site_of(site), self._digest(value))
        with self._lock:
            self._catch_up()
            if key in self._entries:
                return True
        stripped = value.strip(b"\"'=.")
        return stripped != value and (site_of(site), self._digest(stripped)) in self._entries
