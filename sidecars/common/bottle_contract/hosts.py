"""Host names and host patterns: what a route's ``host`` may be, how a request's host matches a
pattern, and when one pattern lies within another. The host's manifests, its decisions on
proposals, supervise's check of what the agent asks and egress's matching all use these.

A pattern is a DNS name (``api.example.com``), an IP address (manifests only: an operator may
name one; the agent may not ask for one), or ``*.`` followed by a name of at least two labels
(``*.example.com``: any subdomain, never the apex).
"""

from __future__ import annotations

import functools
import ipaddress
import re

MAX_NAME = 253
_LABEL_RE = re.compile(r"^[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?$")


def normalize_host(host: str) -> str:
    """Lower case, no surrounding space, no trailing dot, IPv6 brackets removed: the form every
    comparison uses."""
    return host.strip().lower().rstrip(".").removeprefix("[").removesuffix("]")


def is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def host_problem(pattern: str, *, allow_ip: bool = True, min_labels: int = 1) -> str | None:
    """Why ``pattern`` (already normalised) is not a route host, as a short phrase, else None.

    ``allow_ip``: IP literals are accepted (an operator's manifest, routes.yaml).
    ``min_labels``: how many labels a plain name needs (the agent must name a registrable host).
    """
    if not pattern:
        return "is empty"
    if len(pattern) > MAX_NAME:
        return f"is longer than {MAX_NAME} characters"
    if is_ip(pattern):
        return None if allow_ip else "is an IP address; name the host the service is known by"
    if ":" in pattern or "/" in pattern or "@" in pattern:
        return "is not a bare host name (no scheme, port, path or user)"
    labels = pattern.split(".")
    if "*" in pattern:
        if labels[0] != "*" or "*" in "".join(labels[1:]):
            return "has a bad wildcard: '*' may only be the whole first label, e.g. '*.example.com'"
        if len(labels) < 3:
            return "is too broad: a wildcard needs at least two labels after '*.', e.g. '*.example.com'"
        labels = labels[1:]
    if len(labels) < min_labels:
        return f"needs at least {min_labels} labels, e.g. api.example.com"
    if not all(_LABEL_RE.match(label) for label in labels):
        return "is not a valid host name: use letters, digits, '-' and '.', e.g. api.example.com"
    return None


@functools.lru_cache(maxsize=1)
def _public_suffixes() -> tuple[object, dict[str, str]]:
    """The Public Suffix List of the pinned ``publicsuffixlist`` package (its version is the list's
    date): the library, and each name with a public suffix beneath it, mapped to the shortest
    such suffix (``amazonaws.com``: ``s3.amazonaws.com``), from the list file the package ships.
    Imported on first use: the bare-python3 daemons never call this."""
    from importlib.resources import files

    from publicsuffixlist import PublicSuffixList

    above: dict[str, str] = {}
    text = (files("publicsuffixlist") / "public_suffix_list.dat").read_text(encoding="utf-8")
    for line in text.splitlines():
        rule = line.strip().split(" ", 1)[0].removeprefix("!").removeprefix("*.")
        if not rule or rule.startswith("//"):
            continue
        try:
            rule = rule.encode("idna").decode("ascii").lower()
        except UnicodeError:
            continue  # not a name an ASCII host can spell
        labels = rule.split(".")
        for i in range(1, len(labels)):
            name = ".".join(labels[i:])
            if name not in above or len(rule) < len(above[name]):
                above[name] = rule
    return PublicSuffixList(), above


def public_suffix_problem(pattern: str) -> str | None:
    """Why the wildcard ``pattern`` (already normalised) would match the hosts of many owners, as a
    phrase the agent can act on, else None: its base is a public suffix (``*.co.uk``,
    ``*.github.io``) or has public suffixes beneath it (``*.amazonaws.com`` covers
    ``s3.amazonaws.com``, where anyone has a bucket). Plain names are never refused here."""
    if not pattern.startswith("*."):
        return None
    base = pattern[2:]
    try:
        psl, above = _public_suffixes()
    except (ImportError, OSError):
        return (
            "cannot be checked against the Public Suffix List (the publicsuffixlist package is missing): name the hosts"
        )
    if psl.is_public(base):  # type: ignore[attr-defined]
        return (
            f"is a wildcard over '{base}', a public suffix (names under it belong to many owners): ask for "
            f"the hosts you need, e.g. 'api.{base}', or a wildcard one level down such as '*.yourname.{base}'"
        )
    if base in above:
        return (
            f"is a wildcard over public suffixes such as '{above[base]}' (names under them belong to many "
            f"owners): ask for the hosts you need, e.g. 'api.{base}' or 'yourname.{above[base]}'"
        )
    return None


def host_matches(pattern: str, host: str) -> bool:
    """Whether a request for ``host`` falls under the route host ``pattern``."""
    host = normalize_host(host)
    if pattern.startswith("*."):
        return host.endswith(pattern[1:]) and len(host) > len(pattern) - 1
    return host == pattern


def host_within(inner: str, outer: str) -> bool:
    """Whether every host ``inner`` matches is also matched by ``outer`` (an operator may narrow
    what was asked, never widen it)."""
    if inner == outer:
        return True
    if outer.startswith("*."):
        base = outer[1:]
        return (
            inner.endswith(base) and len(inner) > len(base) and (not inner.startswith("*.") or inner[1:].endswith(base))
        )
    return False
