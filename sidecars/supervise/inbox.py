"""The supervise daemon's side of the proposal queue: validate what the agent asks, write proposals,
turn egress's blocks into deduplicated drafts, and wait for the operator's decision.

Stdlib and pyyaml only, so it can be unit-tested without the MCP SDK. The file format and the locking match
bottle_tui/proposals.py (the host side, which decides): one JSON file per proposal in
``<state>/queue/<id>.json``, every write an atomic replace, every read-modify-write under an
``flock`` of ``queue/.lock``. This daemon only ever creates pending proposals and updates pending
drafts; it never writes a decision, and it touches the policy only to withdraw a route the operator
allowed ``once`` after egress let a request through it (narrowing, never widening).
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import fnmatch
import ipaddress
import json
import os
import re
import secrets
import sys
import time
from datetime import datetime, timezone
from typing import Any, Iterator

import yaml
from bottle_contract.files import atomic_write

SCHEMA_VERSION = 1
HTTP_METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "CONNECT", "TRACE")
DEFAULT_PORTS = [80, 443]
MAX_REASON = 4000
MAX_PATH = 2048
MAX_ITEMS = 16
MAX_PENDING = 200  # per bottle: an agent cannot flood the operator's queue
_LABEL_RE = re.compile(r"^[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?$")
_RULE_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$")
ID_RE = re.compile(r"^[a-z0-9][a-z0-9-]{0,63}$")


class InputError(ValueError):
    """Bad input from the agent: the message is returned to it as a tool error."""


def now_iso() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds")


def new_id() -> str:
    return datetime.now(timezone.utc).strftime("%Y%m%dt%H%M%S%f")[:-3] + "-" + secrets.token_hex(4)


# --- validation of what the agent sends ----------------------------------------------------------


def check_host(host: object, key: str = "host") -> str:
    if not isinstance(host, str) or not host.strip():
        raise InputError(f"{key}: give a host name such as api.example.com")
    h = host.strip().lower().rstrip(".")
    if len(h) > 253:
        raise InputError(f"{key}: longer than 253 characters")
    if "://" in h or "/" in h or ":" in h or "@" in h:
        raise InputError(f"{key}: {h[:80]!r} must be a bare host name: no scheme, port, path or user (ports and paths have their own fields)")
    try:
        ipaddress.ip_address(h)
    except ValueError:
        pass
    else:
        raise InputError(f"{key}: {h!r} is an IP address; ask for the host name the service is known by")
    labels = h.split(".")
    if labels[0] == "*":
        if len(labels) < 3:
            raise InputError(f"{key}: {h!r} is too broad; a wildcard needs two labels after '*.', e.g. *.example.com")
        labels = labels[1:]
    if len(labels) < 2 or not all(_LABEL_RE.match(label) for label in labels):
        raise InputError(f"{key}: {h[:80]!r} is not a host name; use letters, digits, '-' and '.', e.g. api.example.com ('*' only as the whole first label)")
    return h


def check_ports(ports: object) -> list[int]:
    if ports in (None, []):
        return list(DEFAULT_PORTS)
    if not isinstance(ports, list) or len(ports) > MAX_ITEMS or not all(
        isinstance(p, int) and not isinstance(p, bool) and 0 < p < 65536 for p in ports
    ):
        raise InputError(f"ports: a list of at most {MAX_ITEMS} port numbers (1-65535), or leave it out for 80 and 443")
    return sorted(set(ports))


def check_methods(methods: object) -> list[str]:
    if methods in (None, []):
        return []
    if not isinstance(methods, list) or len(methods) > MAX_ITEMS or not all(isinstance(m, str) for m in methods):
        raise InputError("methods: a list of HTTP methods such as [\"GET\"], or leave it out for any")
    out = []
    for m in methods:
        mu = m.strip().upper()
        if mu not in HTTP_METHODS:
            raise InputError(f"methods: {m[:20]!r} is not one of {', '.join(HTTP_METHODS)}")
        if mu not in out:
            out.append(mu)
    return out


def check_paths(paths: object) -> list[str]:
    if paths in (None, []):
        return []
    if not isinstance(paths, list) or len(paths) > MAX_ITEMS or not all(isinstance(p, str) for p in paths):
        raise InputError(f"paths: a list of at most {MAX_ITEMS} paths such as [\"/v1/*\"], or leave it out for any")
    out = []
    for p in paths:
        if not p.startswith("/") or len(p) > MAX_PATH or any(ch in p for ch in "?[]#") or any(ord(ch) < 33 for ch in p):
            raise InputError(f"paths: {p[:80]!r} must start with '/', have no spaces, control characters, '?', '#' or brackets ('*' is the wildcard), at most {MAX_PATH} characters")
        if p not in out:
            out.append(p)
    return out


def check_reason(reason: object) -> str:
    if not isinstance(reason, str) or not reason.strip():
        raise InputError("reason: say in a sentence why you need this; the operator reads it")
    if len(reason) > MAX_REASON:
        raise InputError(f"reason: at most {MAX_REASON} characters")
    return reason


def check_rule(rule: object) -> str:
    if not isinstance(rule, str) or not _RULE_RE.match(rule):
        raise InputError("rule: the id of the gitleaks rule that blocked the request, e.g. generic-api-key")
    return rule


def route_change(host, ports=None, methods=None, paths=None) -> dict[str, Any]:
    return {"host": check_host(host), "ports": check_ports(ports), "methods": check_methods(methods), "paths": check_paths(paths)}


# --- the queue -----------------------------------------------------------------------------------


class Queue:
    def __init__(self, state_dir: str, slug: str):
        self.state_dir = state_dir
        self.dir = os.path.join(state_dir, "queue")
        self.slug = slug
        os.makedirs(self.dir, exist_ok=True)

    @contextlib.contextmanager
    def lock(self) -> Iterator[None]:
        fd = os.open(os.path.join(self.dir, ".lock"), os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)

    def path(self, pid: str) -> str:
        if not ID_RE.match(pid):
            raise InputError(f"id: {pid[:80]!r} is not a proposal id")
        return os.path.join(self.dir, f"{pid}.json")

    def get(self, pid: str) -> dict[str, Any] | None:
        try:
            with open(self.path(pid), encoding="utf-8") as f:
                data = json.load(f)
        except (OSError, ValueError):
            return None
        return data if isinstance(data, dict) and data.get("id") == pid else None

    def _write(self, data: dict[str, Any]) -> None:
        atomic_write(self.path(data["id"]), (json.dumps(data, indent=2) + "\n").encode(), mode=0o644)

    def all(self) -> list[dict[str, Any]]:
        out = []
        for name in os.listdir(self.dir):
            if name.endswith(".json") and not name.startswith("."):
                p = self.get(name[:-5]) if ID_RE.match(name[:-5]) else None
                if p is not None:
                    out.append(p)
        return sorted(out, key=lambda p: (p.get("created_at", ""), p["id"]))

    def _new(self, kind: str, change: dict[str, Any], reason: str, **extra: Any) -> dict[str, Any]:
        pending = sum(1 for p in self.all() if p.get("status") == "pending")
        if pending >= MAX_PENDING:
            raise InputError(f"{pending} requests are already waiting for the operator; wait for decisions (list-my-requests) before asking for more")
        data = {
            "version": SCHEMA_VERSION, "id": new_id(), "slug": self.slug, "kind": kind, "change": change,
            "reason": reason, "draft": False, "created_at": now_iso(), "status": "pending", "decision": None,
            **extra,
        }
        self._write(data)
        return data

    def request(self, kind: str, change: dict[str, Any], reason: str) -> dict[str, Any]:
        """A new pending proposal; a pending draft for the same route becomes this request."""
        with self.lock():
            if kind == "egress-route":
                for p in self.all():
                    c = p.get("change", {})
                    if p.get("draft") and p.get("status") == "pending" and c.get("host") == change["host"] \
                            and c.get("methods") == change["methods"] and c.get("paths") == change["paths"] \
                            and c.get("ports") == change["ports"]:
                        p.update(draft=False, reason=reason, asked_at=now_iso())
                        self._write(p)
                        return p
            return self._new(kind, change, reason)

    @staticmethod
    def _draft_key(change: dict[str, Any]) -> tuple:
        return (change.get("host"), tuple(change.get("methods") or ()), tuple(change.get("paths") or ()))

    def note_block(self, method: str, host: str, port: int, path: str, seen: str | None = None,
                   context: str | None = None) -> dict[str, Any] | None:
        """Count a blocked request into its draft (one per host + method + path), creating it."""
        try:
            change = {"host": check_host(host), "ports": check_ports([port]), "methods": check_methods([method]),
                      "paths": check_paths([path or "/"])}
        except InputError:
            return None  # not something a route could allow (an IP literal, a raw TCP flow...)
        seen = seen or now_iso()
        key = self._draft_key(change)
        with self.lock():
            for p in self.all():
                if p.get("draft") and p.get("status") == "pending" and self._draft_key(p.get("change", {})) == key:
                    if port not in p["change"]["ports"]:
                        p["change"]["ports"] = sorted(set(p["change"]["ports"]) | {port})
                    if context is None:
                        p["count"] = int(p.get("count", 0)) + 1
                        p["last_seen"] = max(str(p.get("last_seen", "")), seen)
                    else:
                        p["context"] = context
                    self._write(p)
                    return p
            extra = {"draft": True, "count": 0 if context is not None else 1, "last_seen": seen}
            if context is not None:
                extra["context"] = context
            return self._new("egress-route", change, "", **extra)

    async def wait(self, pid: str, timeout: float, interval: float = 0.05) -> dict[str, Any] | None:
        """The proposal once decided, or None when ``timeout`` passes first."""
        deadline = time.monotonic() + timeout
        path = self.path(pid)
        last = None
        while True:
            try:
                st = os.stat(path)
                sig = (st.st_ino, st.st_mtime_ns, st.st_size)
            except FileNotFoundError:
                sig = None
            if sig != last:
                last = sig
                p = self.get(pid)
                if p is not None and p.get("status") != "pending":
                    return p
            if time.monotonic() >= deadline:
                return None
            await asyncio.sleep(min(interval, max(0.0, deadline - time.monotonic())))


# --- egress's decisions log ----------------------------------------------------------------------


class EgressTail:
    """Reads egress's requests.jsonl from where it left off; the cursor survives restarts."""

    def __init__(self, log_path: str, cursor_path: str):
        self.log_path = log_path
        self.cursor_path = cursor_path
        self.inode, self.offset = self._load_cursor()

    def _load_cursor(self) -> tuple[int | None, int]:
        try:
            with open(self.cursor_path, encoding="utf-8") as f:
                c = json.load(f)
            return int(c["inode"]), int(c["offset"])
        except (OSError, ValueError, KeyError, TypeError):
            return None, 0

    def _save_cursor(self) -> None:
        atomic_write(self.cursor_path, json.dumps({"inode": self.inode, "offset": self.offset}).encode(), mode=0o644)

    def poll(self) -> list[dict[str, Any]]:
        try:
            st = os.stat(self.log_path)
        except FileNotFoundError:
            return []
        if st.st_ino != self.inode or st.st_size < self.offset:
            self.inode, self.offset = st.st_ino, 0  # a new or truncated file: read it from the start
        if st.st_size == self.offset:
            return []
        with open(self.log_path, "rb") as f:
            f.seek(self.offset)
            chunk = f.read(st.st_size - self.offset)
        end = chunk.rfind(b"\n")
        if end < 0:
            return []  # half a line: wait for the rest
        self.offset += end + 1
        records = []
        for line in chunk[: end + 1].splitlines():
            try:
                rec = json.loads(line)
            except ValueError:
                continue
            if isinstance(rec, dict):
                records.append(rec)
        self._save_cursor()
        return records


def drafts_from(queue: Queue, records: list[dict[str, Any]]) -> int:
    """Turn egress's HTTP blocks into drafts; returns how many blocks were counted."""
    n = 0
    for rec in records:
        if rec.get("decision") != "block" or not rec.get("method") or not isinstance(rec.get("port"), int):
            continue
        if queue.note_block(str(rec["method"]), str(rec.get("host", "")), rec["port"], str(rec.get("path") or "/"),
                            seen=str(rec.get("ts") or now_iso())) is not None:
            n += 1
    return n


def for_agent(p: dict[str, Any]) -> dict[str, Any]:
    """What the agent is told about a proposal."""
    d = p.get("decision") or {}
    out = {"id": p["id"], "kind": p.get("kind"), "status": p.get("status"), "asked": p.get("change"),
           "draft": bool(p.get("draft")), "created_at": p.get("created_at")}
    if p.get("status") != "pending":
        out.update(final_change=d.get("change"), scope=d.get("scope"), note=d.get("note") or "", decided_at=d.get("at"))
    return out


# --- routes allowed once -------------------------------------------------------------------------


def route_matches(route: dict[str, Any], rec: dict[str, Any]) -> bool:
    """Whether egress's allowed request ``rec`` went through ``route`` (a routes.yaml entry)."""
    host = str(rec.get("host", "")).lower().rstrip(".")
    rh = str(route.get("host", ""))
    host_ok = host.endswith(rh[1:]) and len(host) > len(rh) - 1 if rh.startswith("*.") else host == rh
    path = str(rec.get("path") or "/")
    return (
        host_ok
        and rec.get("port") in (route.get("ports") or [])
        and (not route.get("methods") or str(rec.get("method", "")).upper() in route["methods"])
        and (not route.get("paths") or any(fnmatch.fnmatchcase(path, p) for p in route["paths"]))
    )


def withdraw_once(queue: Queue, records: list[dict[str, Any]], routes_path: str) -> int:
    """Remove each route allowed ``once`` that a request in ``records`` went through; returns how many."""
    allows = [r for r in records if r.get("decision") == "allow"]
    if not allows:
        return 0
    with queue.lock():
        used = [(p, rec) for p in queue.all() if p.get("once_route") and not p.get("once_used")
                for rec in [next((r for r in allows if route_matches(p["once_route"], r)), None)] if rec]
        if not used:
            return 0
        with open(routes_path, encoding="utf-8") as f:
            doc = yaml.safe_load(f)
        routes = list(doc.get("routes") or [])
        for p, _ in used:
            if p["once_route"] in routes:
                routes.remove(p["once_route"])
        doc["routes"] = routes
        # The policy first: a crash before the proposals are marked leaves nothing allowed twice.
        atomic_write(routes_path, yaml.safe_dump(doc, sort_keys=False).encode(), mode=0o600)
        for p, rec in used:
            p["once_used"] = {"at": now_iso(), "request": f"{rec.get('method')} {rec.get('host')}:{rec.get('port')}{rec.get('path')}"}
            queue._write(p)
    return len(used)
