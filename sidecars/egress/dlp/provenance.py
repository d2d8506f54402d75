"""Provenance: values an upstream handed the agent may go back to that site.

A pagination cursor, a presigned URL's signature, a registry's bearer token, a ``Location``
that a release download redirects to: high-entropy values the agent did not make but was given,
which gitleaks' rules cannot tell from a secret. The store keeps, per bottle (one egress
process), a keyed hash of each such token per site (never the value), and a hit whose secret was
learned from the request's site, or from a site whose redirect pointed there, is not a hit.

Bounded: at most ``max_bytes`` (16 MiB by default) of entries, oldest first out. Thread-safe.

    store = Provenance()
    store.learn(site, headers, body)          # from a response, before the agent sees it
    store.known(site, secret) -> bool         # at scan time, for one finding's secret
"""

from __future__ import annotations

import hashlib
import math
import os
import re
import threading
import urllib.parse
from collections import Counter, OrderedDict
from collections.abc import Iterable

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


class Provenance:
    """The per-bottle store. ``max_bytes`` bounds it (entries x ENTRY_BYTES)."""

    def __init__(self, max_bytes: int = DEFAULT_MAX_BYTES):
        self.max_entries = max(1, max_bytes // ENTRY_BYTES)
        self._key = os.urandom(16)  # per process: the stored hashes say nothing outside it
        self._entries: OrderedDict[tuple[str, bytes], None] = OrderedDict()
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._entries)

    def _digest(self, value: bytes) -> bytes:
        return hashlib.blake2b(value, digest_size=16, key=self._key).digest()

    def add(self, site: str, value: bytes) -> None:
        """Remember one value as handed out by ``site``."""
        key = (site_of(site), self._digest(value))
        with self._lock:
            self._entries[key] = None
            self._entries.move_to_end(key)
            while len(self._entries) > self.max_entries:
                self._entries.popitem(last=False)

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
        for s in sites:
            for t in found:
                self.add(s, t)
        return len(found)

    def known(self, site: str, value: bytes) -> bool:
        """Whether ``value`` (a finding's secret) was handed to the agent by ``site``."""
        key = (site_of(site), self._digest(value))
        with self._lock:
            if key in self._entries:
                return True
        stripped = value.strip(b"\"'=.")
        return stripped != value and (site_of(site), self._digest(stripped)) in self._entries
