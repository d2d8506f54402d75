"""The supervise daemon's side of the proposal queue: validate what the agent asks, write proposals,
turn egress's blocks into deduplicated drafts, and wait for the operator's decision.

The format of a proposal, its ids, the queue's lock and the validation of a change are the
contract's (``bottle_contract.proposal``), which the host uses to decide: one copy of each rule.
This daemon only ever creates pending proposals and updates pending drafts; it never writes a
decision, and it touches the policy only to withdraw a route the operator allowed ``once`` after
egress let a request through it (narrowing, never widening). Stdlib, pyyaml and the contract
only, so it can be unit-tested without the MCP SDK.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import time
from typing import Any

from bottle_contract import layout
from bottle_contract import proposal as contract
from bottle_contract.files import atomic_write
from bottle_contract.policy import SCHEMES, load_policy, route_path, yaml_text
from bottle_contract.proposal import MAX_ITEMS, MAX_PATH, MAX_REASON, ChangeError, now_iso

__all__ = ["MAX_ITEMS", "MAX_PATH", "MAX_REASON", "now_iso"]

MAX_PENDING = layout.MAX_PENDING  # per bottle: an agent cannot flood the operator's queue
# The scheme a draft proposes when egress did not say (report-blocked): the one the port implies.
PORT_SCHEMES = {80: ["http"], 443: ["https"]}

log = logging.getLogger("supervise")


class InputError(ValueError):
    """Bad input from the agent: the message is returned to it as a tool error."""


def _input_error(e: ChangeError, prefix: str = "") -> InputError:
    return InputError(f"{prefix}{e.key}: {e.problem}")


# --- validation of what the agent sends (the contract's rules, worded for the agent) -------------


def check_host(host: object, key: str = "host") -> str:
    try:
        return str(contract.validate_change("dlp-exemption", {"host": host, "rule": "x"})["host"])
    except ChangeError as e:
        raise InputError(f"{key}: {e.problem}") from None


def check_reason(reason: object) -> str:
    if not isinstance(reason, str) or not reason.strip():
        raise InputError("reason: say in a sentence why you need this; the operator reads it")
    if len(reason) > MAX_REASON:
        raise InputError(f"reason: at most {MAX_REASON} characters")
    return reason


def check_rule(rule: object) -> str:
    try:
        return str(contract.validate_change("dlp-exemption", {"host": "rule.check", "rule": rule})["rule"])
    except ChangeError as e:
        raise InputError(f"rule: {e.problem}") from None


def unreachable_name(host: str) -> bool:
    """A name in the reserved ``invalid`` TLD (RFC 6761): nothing outside a selftest resolves it
    (selftest's canary is ``*.selftest.invalid``), so no route for it is worth a draft."""
    name = host.strip().rstrip(".").lower()
    return name == "invalid" or name.endswith(".invalid")


def route_change(
    host: object, ports: object = None, methods: object = None, paths: object = None, schemes: object = None
) -> dict[str, Any]:
    try:
        return contract.validate_change(
            "egress-route", {"host": host, "ports": ports, "methods": methods, "paths": paths, "schemes": schemes}
        )
    except ChangeError as e:
        raise _input_error(e) from None


# --- the queue -----------------------------------------------------------------------------------


class Queue(contract.Queue):
    """One bottle's queue, as the daemon writes it (``<state>/queue/``)."""

    def __init__(self, state_dir: str, slug: str):
        super().__init__(os.path.join(state_dir, layout.QUEUE))
        self.state_dir = state_dir
        self.dir = self.folder
        self._slug = slug
        os.makedirs(self.folder, exist_ok=True)

    @property
    def slug(self) -> str:
        """The bottle's slug: what the host wrote at a claim (layout.SLUG_FILE), else BOTTLE_SLUG."""
        try:
            with open(os.path.join(self.state_dir, layout.SLUG_FILE), encoding="utf-8") as f:
                claimed = f.read(256).strip()
        except (OSError, UnicodeDecodeError):
            return self._slug
        return claimed or self._slug

    def path(self, pid: str) -> str:
        try:
            return super().path(pid)
        except ChangeError as e:
            raise _input_error(e) from None

    def get(self, pid: str) -> dict[str, Any] | None:
        return self.read(pid)

    def _write(self, data: dict[str, Any]) -> None:
        self.write(data)

    def _new(self, kind: str, change: dict[str, Any], reason: str, **extra: Any) -> dict[str, Any]:
        pending = sum(1 for p in self.all() if p.get("status") == "pending")
        if pending >= MAX_PENDING:
            raise InputError(self._full_message(pending))
        data = contract.new_proposal(self.slug, kind, change, reason, **extra)
        self._write(data)
        self.prune_decided()  # the folder on the operator's disk stays bounded (layout.MAX_DECIDED)
        return data

    @staticmethod
    def _full_message(pending: int) -> str:
        return f"{pending} requests are already waiting for the operator; wait for decisions (list-my-requests) before asking for more"

    def request(self, kind: str, change: dict[str, Any], reason: str) -> dict[str, Any]:
        """A new pending proposal; a pending draft for the same route (whatever its schemes)
        becomes this request, with the change as asked."""
        with self.lock():
            if kind == "egress-route":
                for p in self.all():
                    c = p.get("change", {})
                    if (
                        p.get("draft")
                        and p.get("status") == "pending"
                        and {**c, "schemes": None} == {**change, "schemes": None}
                    ):
                        p.update(draft=False, reason=reason, asked_at=now_iso(), change=change)
                        self._write(p)
                        return p
            return self._new(kind, change, reason)

    @staticmethod
    def _draft_key(change: dict[str, Any]) -> tuple:
        return (change.get("host"), tuple(change.get("methods") or ()), tuple(change.get("paths") or ()))

    def note_block(
        self,
        method: str,
        host: str,
        port: int,
        path: str,
        seen: str | None = None,
        context: str | None = None,
        scheme: str | None = None,
    ) -> dict[str, Any] | None:
        """Count one blocked request into its draft (see note_blocks); None when no route could
        allow it, InputError when a new draft would take the queue past MAX_PENDING."""
        return self.note_blocks([(method, host, port, path, seen, context, scheme)], drop_when_full=False)[0]

    def note_blocks(
        self,
        blocks: list[tuple[str, str, int, str, str | None, str | None, str | None]],
        *,
        drop_when_full: bool = True,
    ) -> list[dict[str, Any] | None]:
        """Count blocked requests ``(method, host, port, path, seen, context, scheme)`` into their
        drafts (one per host + method + path), creating them: the queue is read once and each
        draft written once, however many blocks a batch holds (a flood of them costs little).
        A draft proposes what was seen: that port, that scheme, and the path as egress matches it
        (decoded once: bottle_contract.policy.route_path). Without a scheme (report-blocked), a
        new draft takes the one its port implies (both for another port) and a draft's schemes
        stay. With ``context`` the block adds the agent's words instead of counting. A new draft
        past MAX_PENDING is dropped (None), or with ``drop_when_full`` false raises InputError."""
        out: list[dict[str, Any] | None] = [None] * len(blocks)
        wanted = []
        for i, (method, host, port, path, seen, context, scheme) in enumerate(blocks):
            path = route_path(path or "/")
            if "*" in path:
                continue  # a literal '*' cannot be written as a route's path glob
            if unreachable_name(host):
                continue  # selftest's attacks, aimed at names that resolve nowhere else
            try:
                change = route_change(
                    host, [port], [method], [path], [scheme] if scheme else PORT_SCHEMES.get(port, list(SCHEMES))
                )
            except InputError:
                continue  # not something a route could allow (an IP literal, a raw TCP flow...)
            wanted.append((i, change, port, seen or now_iso(), context, scheme))
        if not wanted:
            return out
        with self.lock():
            current = self.all()
            pending = sum(1 for p in current if p.get("status") == "pending")
            drafts = {
                self._draft_key(p.get("change", {})): p
                for p in current
                if p.get("draft") and p.get("status") == "pending"
            }
            changed: dict[str, dict[str, Any]] = {}
            for i, change, port, seen, context, scheme in wanted:
                p = drafts.get(self._draft_key(change))
                if p is None:
                    if pending >= MAX_PENDING:
                        if drop_when_full:
                            continue
                        raise InputError(self._full_message(pending))
                    p = contract.new_proposal(
                        self.slug, "egress-route", change, "", draft=True, count=0, last_seen=seen
                    )
                    drafts[self._draft_key(change)] = p
                    pending += 1
                elif port not in p["change"]["ports"]:
                    p["change"]["ports"] = sorted(set(p["change"]["ports"]) | {port})
                if scheme:
                    seen_schemes = set(p["change"].get("schemes") or ()) | {scheme}
                    p["change"]["schemes"] = [x for x in SCHEMES if x in seen_schemes]
                if context is None:
                    p["count"] = int(p.get("count", 0)) + 1
                    p["last_seen"] = max(str(p.get("last_seen", "")), seen)
                else:
                    p["context"] = context
                changed[p["id"]] = p
                out[i] = p
            for p in changed.values():
                self._write(p)
            if changed:
                self.prune_decided()
        return out

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
            except (ValueError, RecursionError):
                continue
            if isinstance(rec, dict):
                records.append(rec)
        with contextlib.suppress(OSError):  # only restarts need it: a full disk must not lose these records
            self._save_cursor()
        return records


def drafts_from(queue: Queue, records: list[dict[str, Any]]) -> int:
    """Turn egress's HTTP blocks into drafts, in one pass over the queue; returns how many blocks
    were counted. A block that finds the queue full (MAX_PENDING) is dropped: the agent's noise
    never stops the others."""
    blocks = [
        (
            str(r["method"]),
            str(r.get("host", "")),
            r["port"],
            str(r.get("path") or "/"),
            str(r.get("ts") or now_iso()),
            None,
            r.get("scheme") if r.get("scheme") in SCHEMES else None,
        )
        for r in records
        if r.get("decision") == "block"
        and r.get("method")
        and isinstance(r.get("port"), int)
        and not isinstance(r.get("port"), bool)
    ]
    return sum(1 for p in queue.note_blocks(blocks) if p is not None)


def for_agent(p: dict[str, Any]) -> dict[str, Any]:
    """What the agent is told about a proposal."""
    d = p.get("decision") or {}
    out = {
        "id": p["id"],
        "kind": p.get("kind"),
        "status": p.get("status"),
        "asked": p.get("change"),
        "draft": bool(p.get("draft")),
        "created_at": p.get("created_at"),
    }
    if p.get("status") != "pending":
        out.update(final_change=d.get("change"), scope=d.get("scope"), note=d.get("note") or "", decided_at=d.get("at"))
    return out


# --- routes allowed once -------------------------------------------------------------------------


def once_used_in(records: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """The log lines of requests egress let through a route allowed once, by the route's ``once``
    (the proposal id egress wrote at its decision: the very route it matched, by the same decoded
    path; nothing here matches host or path again)."""
    return {str(r["once"]): r for r in records if r.get("decision") == "allow" and contract.is_id(r.get("once"))}


def withdraw_once(queue: Queue, records: list[dict[str, Any]], routes_path: str) -> int:
    """Withdraw each route allowed ``once`` that egress logged a request through; returns how
    many were withdrawn (a route already gone counts nothing, so nothing is withdrawn twice)."""
    used = once_used_in(records)
    if not used:
        return 0
    with queue.lock():
        policy = load_policy(routes_path)
        withdrawn = [pid for pid in used if any(r.once == pid for r in policy.routes)]
        for pid in withdrawn:
            policy = policy.without_once(pid)
        if withdrawn:
            # The policy first: a crash before the proposals are marked leaves nothing allowed twice.
            atomic_write(routes_path, yaml_text(policy.to_doc()), mode=0o600)
        for pid in used:
            p = queue.get(pid)
            if p is not None and not p.get("once_used"):
                rec = used[pid]
                p["once_used"] = {
                    "at": now_iso(),
                    "request": f"{rec.get('method')} {rec.get('host')}:{rec.get('port')}{rec.get('path')}",
                }
                queue._write(p)
    return len(withdrawn)


class Intake:
    """What supervise does with each batch of egress's decisions, in this order: withdraw the
    routes allowed once that a request used, first, because nothing before it may fail (a
    withdraw that fails is owed and tried again with the next batch); then count the blocks into
    drafts, on their own: a full queue or a bad draft never holds a withdraw back."""

    def __init__(self, queue: Queue, tail: EgressTail, routes_path: str) -> None:
        self.queue, self.tail, self.routes_path = queue, tail, routes_path
        self.owed: dict[str, dict[str, Any]] = {}  # once ids used but not yet withdrawn
        self._last_error = ""

    def step(self) -> int:
        """One batch; returns how many routes were withdrawn (egress must reload then)."""
        try:
            records = self.tail.poll()
        except OSError as e:
            self._warn(f"cannot read egress's log: {e}")
            return 0
        self.owed.update(once_used_in(records))
        withdrawn = 0
        if self.owed:
            try:
                withdrawn = withdraw_once(self.queue, list(self.owed.values()), self.routes_path)
                self.owed.clear()
            except Exception as e:
                self._warn(f"cannot withdraw a route allowed once yet (will retry): {e}")
        try:
            drafts_from(self.queue, records)
        except Exception as e:
            self._warn(f"cannot turn egress's blocks into drafts: {e}")
        return withdrawn

    def _warn(self, msg: str) -> None:
        if msg != self._last_error:  # once per kind of trouble, not every tick
            log.warning("supervise: %s", msg)
        self._last_error = msg
