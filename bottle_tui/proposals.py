"""Proposals: what an agent asks for (or tripped over) and the operator's decision on it (DESIGN.md §5).

The one library the CLI and the console share (no Textual here). A proposal is one JSON file,
``state/<slug>/supervise/queue/<id>.json``, written by the bundle's supervise daemon and decided
here::

    {
      "version": 1,
      "id": "20261127T075012123-3f9a1c2b",     # [a-z0-9-], never a path
      "slug": "implementer-1a2b3c",
      "kind": "egress-route" | "dlp-exemption",
      "change": {"host", "ports", "methods", "paths"}        # egress-route ([] = any)
              | {"host", "rule"},                            # dlp-exemption (a gitleaks rule id)
      "reason": "...",             # the agent's words, stored as sent: untrusted, shown inert
      "context": "...",            # optional, from report-blocked
      "draft": false,              # true: egress blocked it, nobody asked yet
      "count": 1, "last_seen": "...",   # drafts: how often, and when last
      "created_at": "2026-11-27T07:50:12.123+00:00",
      "status": "pending" | "approved" | "modified" | "rejected",
      "decision": null | {"by", "at", "scope": "once"|"always", "change", "note"}
    }

Scope ``always`` adds the route for good; ``once`` adds it with ``once_route`` recorded in the
proposal, and the bundle's supervise daemon withdraws it (and sets ``once_used``) as soon as
egress logs a request allowed through it.

Every write of a proposal, of ``routes.yaml`` and of the markers is an atomic replace, and every
read-modify-write of the queue holds ``queue/.lock`` (``flock``), which the daemon takes too: two
deciders racing give one decision, and the other gets "already decided". Applying an approval
rewrites ``state/<slug>/egress/routes.yaml`` before the proposal is marked decided (a crash in
between leaves it pending, and approving again adds nothing twice), then asks the bundle to
reload. Every decision is appended to ``state/<slug>/audit.jsonl`` and ``<home>/audit.jsonl``.
"""

from __future__ import annotations

import contextlib
import fcntl
import fnmatch
import getpass
import json
import os
import re
import secrets
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterator

import yaml

from .errors import BottleError
from .manifest import DEFAULT_PORTS, _auth, _Check, _host, _methods, _paths, _ports
from .state import AUDIT_LOG_CAP, StateDir, all_state_dirs, state_dir
from bottle_contract.files import append_jsonl, atomic_write

SCHEMA_VERSION = 1
KINDS = ("egress-route", "dlp-exemption")
STATUSES = ("pending", "approved", "modified", "rejected")
DECIDED = ("approved", "modified", "rejected")
SCOPES = ("once", "always")
ID_RE = re.compile(r"^[a-z0-9][a-z0-9-]{0,63}$")
RULE_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$")
MAX_NOTE = 4000
ROUTES_KEYS = ("version", "bottle", "dlp", "routes")
POLICY_ROUTE_KEYS = ("host", "ports", "methods", "paths", "schemes", "auth", "dlp")
DLP_KEYS = ("body", "disabled_rules", "max_body_bytes")
LOCK_NAME = ".lock"


class AlreadyDecided(BottleError):
    """Someone else decided this proposal first."""


def now_iso() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds")


def new_id() -> str:
    return datetime.now(timezone.utc).strftime("%Y%m%dt%H%M%S%f")[:-3] + "-" + secrets.token_hex(4)


def check_id(pid: str) -> str:
    if not isinstance(pid, str) or not ID_RE.match(pid):
        raise BottleError(f"'{pid!s:.80}' is not a proposal id: use one that `bottle-tui proposals ls` prints")
    return pid


@contextlib.contextmanager
def queue_lock(state: StateDir) -> Iterator[None]:
    """The queue's one lock: every read-modify-write of a proposal or of routes.yaml holds it."""
    folder = state.queue
    folder.mkdir(parents=True, exist_ok=True)
    fd = os.open(folder / LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing releases the lock


# --- reading -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Proposal:
    data: dict[str, Any]
    path: Path

    @property
    def id(self) -> str:
        return self.data["id"]

    @property
    def slug(self) -> str:
        return self.data["slug"]

    @property
    def kind(self) -> str:
        return self.data["kind"]

    @property
    def status(self) -> str:
        return self.data["status"]

    @property
    def change(self) -> dict[str, Any]:
        return self.data["change"]

    @property
    def pending(self) -> bool:
        return self.status == "pending"

    def summary(self) -> str:
        """One line naming what is asked (agent text included: render it inert)."""
        c = self.change
        if self.kind == "egress-route":
            methods = ",".join(c.get("methods") or []) or "any method"
            paths = " ".join(c.get("paths") or []) or "any path"
            ports = ",".join(str(p) for p in c.get("ports") or [])
            return f"{methods} {c.get('host')}:{ports} {paths}"
        return f"DLP exemption: rule {c.get('rule')} on {c.get('host')}"


def _well_formed(data: object, path: Path) -> bool:
    if not isinstance(data, dict):
        return False
    return (
        data.get("id") == path.stem and ID_RE.match(path.stem) is not None
        and data.get("kind") in KINDS and data.get("status") in STATUSES
        and isinstance(data.get("change"), dict) and isinstance(data.get("slug"), str)
    )


def load(path: Path) -> Proposal | None:
    """The proposal in ``path``, or None when it is not one (a torn or foreign file is skipped)."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return Proposal(data, path) if _well_formed(data, path) else None


def list_bottle(state: StateDir, *, include_decided: bool = True) -> list[Proposal]:
    folder = state.queue
    if not folder.is_dir():
        return []
    found = []
    for path in folder.glob("*.json"):
        p = load(path)
        if p and p.slug == state.slug and (include_decided or p.pending):
            found.append(p)
    return sorted(found, key=lambda p: (p.data.get("created_at", ""), p.id))


def list_all(home: Path, *, include_decided: bool = False) -> list[Proposal]:
    """Proposals of every bottle of ``home``, oldest first; pending ones only unless asked."""
    found = [p for s in all_state_dirs(home) for p in list_bottle(s, include_decided=include_decided)]
    return sorted(found, key=lambda p: (p.data.get("created_at", ""), p.id))


def find(home: Path, pid: str) -> tuple[StateDir, Proposal]:
    check_id(pid)
    for s in all_state_dirs(home):
        p = load(s.queue / f"{pid}.json")
        if p is not None and p.slug == s.slug:
            return s, p
    raise BottleError(f"no proposal '{pid}' in {home / 'state'}: `bottle-tui proposals ls --all` lists them")


def create(state: StateDir, kind: str, change: dict[str, Any], reason: str, *, draft: bool = False) -> Proposal:
    """A new pending proposal (the supervise daemon has its own writer; this one serves tests and tools)."""
    if kind not in KINDS:
        raise BottleError(f"unknown proposal kind '{kind}': use one of {', '.join(KINDS)}")
    pid = new_id()
    data = {
        "version": SCHEMA_VERSION, "id": pid, "slug": state.slug, "kind": kind, "change": change,
        "reason": reason, "draft": draft, "created_at": now_iso(), "status": "pending", "decision": None,
    }
    if draft:
        data.update(count=1, last_seen=data["created_at"])
    path = state.queue / f"{pid}.json"
    with queue_lock(state):
        atomic_write(path, json.dumps(data, indent=2) + "\n", mode=0o644)
    return Proposal(data, path)


# --- validating a change -------------------------------------------------------------------------


def _fail(key: str, problem: str) -> BottleError:
    return BottleError(f"change.{key}: {problem}")


def validate_change(kind: str, change: object, *, source: Path | None = None) -> dict[str, Any]:
    """A change in normal form (hosts lower-case, lists de-duplicated); a one-line error otherwise."""
    ck = _Check(source or Path("change"))
    change = ck.expect_mapping("change", change, "{host: api.example.com}")
    if kind == "egress-route":
        ck.known_keys("change", change, ("host", "ports", "methods", "paths"))
        host = _host(ck, "change.host", ck.required("change", change, "host", "name the host, e.g. host: api.example.com"))
        ports = list(_ports(ck, "change.ports", change["ports"])) if change.get("ports") else list(DEFAULT_PORTS)
        methods = list(_methods(ck, "change.methods", change["methods"])) if change.get("methods") else []
        paths = list(_paths(ck, "change.paths", change["paths"])) if change.get("paths") else []
        for i, p in enumerate(paths):
            if any(ch in p for ch in "?[]") or len(p) > 2048:
                ck.fail(f"change.paths[{i}]", "use '*' as the only wildcard, at most 2048 characters")
        return {"host": host, "ports": ports, "methods": methods, "paths": paths}
    if kind == "dlp-exemption":
        ck.known_keys("change", change, ("host", "rule"))
        host = _host(ck, "change.host", ck.required("change", change, "host", "name the route's host"))
        rule = ck.expect_str("change.rule", ck.required("change", change, "rule", "name a gitleaks rule id, e.g. rule: generic-api-key"))
        if not RULE_RE.match(rule):
            ck.fail("change.rule", f"'{rule[:60]}' is not a gitleaks rule id, e.g. generic-api-key")
        return {"host": host, "rule": rule}
    raise BottleError(f"unknown proposal kind '{kind}'")


def _host_within(final: str, asked: str) -> bool:
    if final == asked:
        return True
    if asked.startswith("*."):
        base = asked[1:]
        return final.endswith(base) and len(final) > len(base) and (not final.startswith("*.") or final[1:].endswith(base))
    return False


def _path_within(final: str, asked: list[str]) -> bool:
    # fnmatch treats the final pattern as text: its '*' is matched by an asked '*' only, so a
    # final glob passes only when every path it matches is also matched by an asked glob.
    return any(fnmatch.fnmatchcase(final, a) for a in asked)


def check_narrower(kind: str, final: dict[str, Any], asked: dict[str, Any]) -> None:
    """An operator's modification may narrow what was asked, never widen it."""
    asked = validate_change(kind, asked)
    if kind == "dlp-exemption":
        if final != asked:
            raise _fail("rule", f"a DLP exemption can be approved or rejected as asked ({asked['rule']} on {asked['host']}), not changed")
        return
    if not _host_within(final["host"], asked["host"]):
        raise _fail("host", f"'{final['host']}' is not within the asked host '{asked['host']}'")
    wider_ports = sorted(set(final["ports"]) - set(asked["ports"]))
    if wider_ports:
        raise _fail("ports", f"{wider_ports} were not asked for (asked: {asked['ports']})")
    if asked["methods"] and (not final["methods"] or set(final["methods"]) - set(asked["methods"])):
        raise _fail("methods", f"only a subset of the asked methods {asked['methods']} can be allowed")
    if asked["paths"]:
        if not final["paths"]:
            raise _fail("paths", f"'any path' is wider than the asked paths {asked['paths']}")
        for p in final["paths"]:
            if not _path_within(p, asked["paths"]):
                raise _fail("paths", f"'{p}' is not within the asked paths {asked['paths']}")


# --- the policy in force (routes.yaml) -----------------------------------------------------------


def routes_path(state: StateDir) -> Path:
    return state.routes


def route_doc(change: dict[str, Any], dlp: dict[str, Any]) -> dict[str, Any]:
    """routes.yaml form of an approved egress-route change: every key explicit ([] = any). Routes
    from proposals never carry credentials, so both schemes are allowed; their DLP settings are
    the bottle's (routes.yaml's top-level ``dlp``)."""
    return {
        "host": change["host"], "ports": list(change["ports"]), "methods": list(change["methods"]),
        "paths": list(change["paths"]), "schemes": ["http", "https"], "auth": None,
        "dlp": {"body": dlp["body"], "disabled_rules": list(dlp["disabled_rules"]), "max_body_bytes": dlp["max_body_bytes"]},
    }


def parse_policy(text: str, source: Path) -> dict[str, Any]:
    """routes.yaml checked with the manifest's own rules (one-line errors naming the key)."""
    ck = _Check(source)
    try:
        doc = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        ck.fail("", f"invalid YAML{where}: {getattr(exc, 'problem', None) or exc}")
    doc = ck.expect_mapping("", doc, "version: 1")
    # Egress refuses anything implicit, so this does too: every key, DLP settings included.
    ck.known_keys("", doc, ROUTES_KEYS)
    _check_dlp(ck, "dlp", ck.required("", doc, "dlp", "write the bottle's DLP settings, e.g. dlp: {body: true, disabled_rules: [], max_body_bytes: 8388608}"))
    if doc.get("version") != 1:
        ck.fail("version", "must be 1")
    ck.expect_str("bottle", doc.get("bottle"), "bottle: dev")
    routes = ck.expect_list("routes", doc.get("routes"), "routes: []")
    for i, raw in enumerate(routes):
        key = f"routes[{i}]"
        r = ck.expect_mapping(key, raw, "- host: api.example.com")
        ck.known_keys(key, r, POLICY_ROUTE_KEYS)
        for name in POLICY_ROUTE_KEYS:
            if name not in r:
                ck.fail(f"{key}.{name}", "missing: routes.yaml lists every key (auth: null for none, [] for any)")
        _check_dlp(ck, f"{key}.dlp", r["dlp"])
        _host(ck, f"{key}.host", ck.required(key, r, "host", "every route needs one"))
        _ports(ck, f"{key}.ports", ck.required(key, r, "ports", "list them, e.g. ports: [443]"))
        for name, check in (("methods", _methods), ("paths", _paths)):
            value = r.get(name)
            if value not in (None, []):
                check(ck, f"{key}.{name}", value)
        schemes = r.get("schemes")
        if schemes is not None:
            items = ck.expect_str_list(f"{key}.schemes", schemes, "schemes: [https]", non_empty="list http and/or https")
            for j, s in enumerate(items):
                if s not in ("http", "https"):
                    ck.fail(f"{key}.schemes[{j}]", f"'{s[:20]}' is not http or https")
        if r.get("auth") is not None:
            _auth(ck, f"{key}.auth", r["auth"])
    return doc


def _check_dlp(ck: _Check, key: str, value: object) -> None:
    """The shape of a ``dlp:`` mapping; egress checks rule ids against its pinned gitleaks rules."""
    d = ck.expect_mapping(key, value, "dlp: {body: true, disabled_rules: [], max_body_bytes: 8388608}")
    ck.known_keys(key, d, DLP_KEYS)
    for name in DLP_KEYS:
        if name not in d:
            ck.fail(f"{key}.{name}", "missing: DLP settings list every key (body, disabled_rules, max_body_bytes)")
    ck.expect_bool(f"{key}.body", d["body"], "body: false")
    ck.expect_int(f"{key}.max_body_bytes", d["max_body_bytes"], "max_body_bytes: 1048576")
    for i, rule in enumerate(ck.expect_str_list(f"{key}.disabled_rules", d["disabled_rules"], "disabled_rules: [generic-api-key]")):
        if not RULE_RE.match(rule):
            ck.fail(f"{key}.disabled_rules[{i}]", f"'{rule[:60]}' is not a gitleaks rule id")


def read_policy(state: StateDir) -> tuple[str, dict[str, Any]]:
    path = routes_path(state)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise BottleError(f"cannot read {path}: {exc.strerror or exc}; is {state.slug} a bottle of this home?") from exc
    return text, parse_policy(text, path)


def write_policy(state: StateDir, doc: dict[str, Any]) -> None:
    from .backends.docker.compose import to_yaml

    text = to_yaml(doc)
    parse_policy(text, routes_path(state))  # never write what egress would refuse
    atomic_write(routes_path(state), text, mode=0o600)


def _route_identity(r: dict[str, Any]) -> tuple[str, ...]:
    """What makes two routes the same (list order aside; schemes follow from auth)."""
    return tuple(json.dumps(sorted(v) if isinstance(v := r.get(k), list) else v, sort_keys=True)
                 for k in ("host", "ports", "methods", "paths", "auth"))


def _same_route(a: dict[str, Any], b: dict[str, Any]) -> bool:
    return _route_identity(a) == _route_identity(b)


def policy_with(doc: dict[str, Any], kind: str, change: dict[str, Any], *, source: Path | None = None) -> dict[str, Any]:
    """The policy ``doc`` with an approved change in it (pure; ``doc`` itself is left as it was).
    A route: added with every key explicit, unless the same route is there already. A DLP
    exemption: the rule id added to ``dlp.disabled_rules`` of every route of the host."""
    if kind == "dlp-exemption":
        routes = [dict(r) for r in doc["routes"]]
        targets = [r for r in routes if r.get("host") == change["host"]]
        if not targets:
            where = f" in {source}" if source else ""
            raise BottleError(f"no route for {change['host']}{where}: a DLP exemption applies to a route; allow the route first")
        for r in targets:
            dlp = dict(r.get("dlp") or {})
            rules = list(dlp.get("disabled_rules") or [])
            if change["rule"] not in rules:
                r["dlp"] = {**dlp, "disabled_rules": rules + [change["rule"]]}
        return {**doc, "routes": routes}
    new = route_doc(change, doc["dlp"])
    routes = list(doc["routes"])
    if any(isinstance(r, dict) and _same_route(r, new) for r in routes):
        return doc
    return {**doc, "routes": routes + [new]}


def apply_change(state: StateDir, kind: str, change: dict[str, Any]) -> bool:
    """Add an approved change to the policy in force; False when it was there already. Holds no
    lock itself: callers hold queue_lock."""
    _, doc = read_policy(state)
    new = policy_with(doc, kind, change, source=routes_path(state))
    if new == doc:
        return False
    write_policy(state, new)
    return True


# --- deciding ------------------------------------------------------------------------------------


def operator() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return f"uid {os.getuid()}"


def append_audit(path: Path, record: dict[str, Any]) -> None:
    """One audit record, one O_APPEND write (concurrent writers never interleave lines); the log
    is rotated at state.AUDIT_LOG_CAP."""
    path.parent.mkdir(parents=True, exist_ok=True)
    append_jsonl(path, record, max_bytes=AUDIT_LOG_CAP.max_bytes, keep=AUDIT_LOG_CAP.keep)


def audit_paths(home: Path, state: StateDir) -> tuple[Path, Path]:
    return state.audit_log, home / "audit.jsonl"


@dataclass(frozen=True)
class Outcome:
    proposal: Proposal
    policy_changed: bool


def decide(home: Path, pid: str, action: str, *, by: str, scope: str = "always",
           change: object = None, note: str = "") -> Outcome:
    """Approve, modify or reject ``pid`` exactly once. ``change`` (modify only) is the operator's
    narrower version of what was asked. Raises AlreadyDecided when someone else was first."""
    if action not in ("approve", "modify", "reject"):
        raise BottleError(f"unknown decision '{action}': use approve, modify or reject")
    if scope not in SCOPES:
        raise BottleError(f"unknown scope '{scope}': use once or always")
    if not isinstance(note, str) or len(note) > MAX_NOTE:
        raise BottleError(f"the note is longer than {MAX_NOTE} characters: shorten it")
    state, _ = find(home, pid)
    with queue_lock(state):
        current = load(state.queue / f"{pid}.json")
        if current is None:
            raise BottleError(f"proposal {pid} vanished from {state.queue}")
        if not current.pending:
            d = current.data.get("decision") or {}
            raise AlreadyDecided(f"proposal {pid} was already {current.status} by {d.get('by', '?')} at {d.get('at', '?')}")
        asked = current.change
        final: dict[str, Any] | None = None
        if action != "reject":
            final = validate_change(current.kind, change if action == "modify" else asked)
            if action == "modify":
                check_narrower(current.kind, final, asked)
        changed = apply_change(state, current.kind, final) if final is not None else False
        status = {"approve": "approved", "modify": "modified", "reject": "rejected"}[action]
        decision = {"by": by, "at": now_iso(), "scope": scope if final is not None else None, "change": final, "note": note}
        data = {**current.data, "status": status, "decision": decision}
        if scope == "once" and changed and final is not None:
            # The supervise daemon withdraws this route once egress has let a request through it.
            data["once_route"] = route_doc(final, read_policy(state)[1]["dlp"])
        atomic_write(current.path, json.dumps(data, indent=2) + "\n", mode=0o644)
        record = {"at": decision["at"], "by": by, "slug": state.slug, "id": pid, "kind": current.kind,
                  "status": status, "scope": decision["scope"], "asked": asked, "change": final, "note": note,
                  "draft": bool(current.data.get("draft")), "policy_changed": changed}
        for path in audit_paths(home, state):
            append_audit(path, record)
    return Outcome(Proposal(data, current.path), changed)


def audit_policy_edit(home: Path, state: StateDir, by: str, before: str, after: str) -> None:
    record = {"at": now_iso(), "by": by, "slug": state.slug, "kind": "policy-edit", "status": "edited",
              "before": before, "after": after}
    for path in audit_paths(home, state):
        append_audit(path, record)


def save_policy_text(home: Path, state: StateDir, before: str, after: str, by: str) -> None:
    """Replace routes.yaml with an operator's edit of ``before`` (validated), unless a decision
    changed it meanwhile; audited. The console's `e` uses it (reload the bundle afterwards)."""
    parse_policy(after, routes_path(state))
    with queue_lock(state):
        current, _ = read_policy(state)
        if current != before:
            raise BottleError(f"{routes_path(state)} changed while you edited it (a decision was applied): edit it again")
        atomic_write(routes_path(state), after, mode=0o600)
        audit_policy_edit(home, state, by, before, after)


def sidecars_container(slug: str) -> str:
    from .backends.docker.engine import container_name
    from .state import project_name

    return container_name(project_name(slug), "sidecars")


async def reload_bundle(slug: str) -> str | None:
    """Ask the bundle to re-read its policy (init forwards SIGHUP to egress). Returns a warning
    when the bundle is not running; the new policy is read at its next start either way."""
    from .runner import run

    result = await run(["docker", "kill", "--signal", "HUP", sidecars_container(slug)], check=False, timeout=30)
    if result.returncode != 0:
        last = (result.stderr.strip().splitlines() or ["no answer"])[-1]
        return f"the policy is saved, but the bundle of {slug} did not take the reload signal ({last[:200]})"
    return None


def state_for(home: Path, slug: str) -> StateDir:
    s = state_dir(home, slug)
    if not s.path.is_dir():
        raise BottleError(f"no state folder for '{slug}' in {home / 'state'}: `bottle-tui ls` lists running bottles")
    return s
