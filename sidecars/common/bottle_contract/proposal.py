"""A proposal: what an agent asks for (or tripped over) and the operator's decision on it.

One JSON file per proposal, ``<supervise folder>/queue/<id>.json``. The bundle's supervise daemon
creates pending proposals and updates pending drafts; the host decides them. This module is the
only statement of the format, and both sides read and write it through ``Queue``::

    {
      "version": 1,
      "id": "20261127t075012123-3f9a1c2b",        # ID_RE: [a-z0-9-], never a path
      "slug": "implementer-1a2b3c",               # the bottle
      "kind": "egress-route" | "dlp-exemption" | "model-tool" | "git-push" | "budget",
      "change": {"host", "ports", "methods", "paths", "schemes"}   # egress-route ([] = any)
              | {"host", "rule"}                                   # dlp-exemption (a gitleaks rule id)
              | {"host", "tool"}                                   # model-tool (policy.MODEL_TOOLS)
              | {"branch", "new", "home", "base", "rewrites", "commits"}    # git-push (below)
              | {"usd", "tokens"},                                 # budget: the new limits (null: none)
      "reason": "...",             # the agent's words, stored as sent: untrusted, shown inert
      "context": "...",            # optional, from report-blocked
      "draft": false,              # true: egress blocked it, nobody asked yet
      "count": 1, "last_seen": "...",   # drafts: how often, and when last
      "created_at": "2026-11-27T07:50:12.123+00:00",
      "status": "pending" | "approved" | "modified" | "rejected",
      "decision": null | {"by", "at", "scope": "once"|"always"|null, "change", "note"},
      "once_used": {"at", "request"},   # set by supervise when a route allowed once was used
      # git-push only, written by the git gate when a clean push is held for review:
      "commits": [{"id", "author", "subject"}],   # base..new, newest first, at most MAX_COMMITS
      "files": ["M\tpath", ...], "stat": "...",   # git diff --name-status / --shortstat base new
      "delivered_at": "...",           # when the gate told the agent the decision (on a push)
      # budget only, written by egress when the bottle's budget is reached:
      "budget": {"usd", "tokens", "spent_usd", "spent_tokens"}   # the limits reached, what was spent
    }

A budget proposal is egress's: the bottle reached its budget and every metered request is refused
until the operator raises it. Its change proposes each reached limit doubled; approving writes it
into metering.json, modifying sets other amounts, rejecting keeps the budget closed.

A git-push change: ``branch`` the agent pushed (refs/heads/<branch> of the gate's mirror), ``new``
its tip, ``home`` the tip the gate last saw approved for it (what ``home_ref`` holds at home, or
null), ``base`` what ``commits`` and the diff are counted from (``home``, else where the branch
left the bottle's starting point, or null for unrelated history), ``rewrites`` whether ``new``
drops commits of ``home`` (a force push), ``commits`` how many commits base..new holds.

Every write is an atomic replace; every read-modify-write holds the queue's lock
(``Queue.lock``), which both sides take: two deciders racing give one decision. Stdlib only.
"""

from __future__ import annotations

import json
import os
import re
import secrets
from contextlib import AbstractContextManager
from datetime import UTC, datetime
from typing import Any

from . import layout
from .clock import now_iso
from .files import atomic_write, locked
from .hosts import host_problem, host_within, normalize_host, public_suffix_problem
from .policy import DEFAULT_PORTS, MODEL_TOOLS, SCHEMES, method_problem, rule_problem
from .usage import budget_problem, parse_budget

__all__ = ["now_iso"]  # re-exported: a proposal's timestamps

SCHEMA_VERSION = 1
KINDS = ("egress-route", "dlp-exemption", "model-tool", "git-push", "budget")
STATUSES = ("pending", "approved", "modified", "rejected")
DECIDED = ("approved", "modified", "rejected")
SCOPES = ("once", "always")
ID_RE = re.compile(r"^[a-z0-9][a-z0-9-]{0,63}$")
MAX_REASON = 4000  # the agent's reason
MAX_NOTE = 4000  # the operator's note
MAX_ITEMS = 16  # ports, methods, paths in one change
MAX_PATH = 2048
MAX_COMMITS = 50  # commits a git-push proposal lists (its change counts them all)
MAX_FILES = 200  # changed files a git-push proposal lists
MAX_BRANCH = 200
# Where an approved git push lands in the operator's repository: nothing else there is ever written.
HOME_REF_PREFIX = "refs/heads/bottle/"
_SHA_RE = re.compile(r"^[0-9a-f]{40}$")
# git check-ref-format's rules for one branch name (the host runs git's own check too).
_BAD_BRANCH_RE = re.compile(r"(^[-/.])|(/\.)|(\.\.)|(@\{)|(//)|([\x00-\x20\x7f~^:?*\[\\])|([/.]$)|(\.lock$)|(\.lock/)")
# A change's route host must be a name of at least two labels (never an IP literal).
_HOST_RULES = {"allow_ip": False, "min_labels": 2}


class ChangeError(ValueError):
    """A change that is not valid: ``key`` is its dotted place (``host``, ``paths[1]``) and
    ``problem`` a phrase; each side words the message for its reader."""

    def __init__(self, key: str, problem: str) -> None:
        self.key, self.problem = key, problem
        super().__init__(f"{key}: {problem}")


def new_id() -> str:
    """A fresh proposal id: sortable by time, with a random tail."""
    return datetime.now(UTC).strftime("%Y%m%dt%H%M%S%f")[:-3] + "-" + secrets.token_hex(4)


def is_id(pid: object) -> bool:
    return isinstance(pid, str) and ID_RE.match(pid) is not None


# --- changes ------------------------------------------------------------------------------------


def _host(value: object) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ChangeError("host", "give a host name such as api.example.com")
    host = normalize_host(value)
    problem = host_problem(host, **_HOST_RULES) or public_suffix_problem(host)  # type: ignore[arg-type]
    if problem is not None:
        raise ChangeError("host", f"{host[:80]!r} {problem}")
    return host


def _items(value: object, key: str, what: str) -> list[Any]:
    if value in (None, []):
        return []
    if not isinstance(value, list) or len(value) > MAX_ITEMS:
        raise ChangeError(key, f"a list of at most {MAX_ITEMS} {what}, or leave it out")
    return value


def _ports(value: object) -> list[int]:
    items = _items(value, "ports", "port numbers (1-65535)")
    if not items:
        return list(DEFAULT_PORTS)
    if not all(isinstance(p, int) and not isinstance(p, bool) and 0 < p < 65536 for p in items):
        raise ChangeError(
            "ports", f"a list of at most {MAX_ITEMS} port numbers (1-65535), or leave it out for 80 and 443"
        )
    return sorted(set(items))


def _methods(value: object) -> list[str]:
    out: list[str] = []
    for i, m in enumerate(_items(value, "methods", 'HTTP methods such as ["GET"]')):
        if not isinstance(m, str) or (problem := method_problem(m.strip().upper())) is not None:
            raise ChangeError(
                f"methods[{i}]", problem if isinstance(m, str) and problem else "must be an HTTP method name"
            )
        if m.strip().upper() not in out:
            out.append(m.strip().upper())
    return out


def _paths(value: object) -> list[str]:
    out: list[str] = []
    for i, p in enumerate(_items(value, "paths", 'paths such as ["/v1/*"]')):
        if (
            not isinstance(p, str)
            or not p.startswith("/")
            or len(p) > MAX_PATH
            or any(ch in p for ch in "?[]#")
            or any(ord(ch) < 33 or ord(ch) == 127 for ch in p)
        ):
            shown = repr(p[:80]) if isinstance(p, str) else "it"
            raise ChangeError(
                f"paths[{i}]",
                f"{shown} must start with '/', have no spaces, control characters, "
                f"'?', '#' or brackets ('*' is the wildcard), at most {MAX_PATH} characters",
            )
        if p not in out:
            out.append(p)
    return out


def _schemes(value: object) -> list[str]:
    items = _items(value, "schemes", "of http, https")
    if not items:
        return list(SCHEMES)
    if not all(isinstance(s, str) and s.lower() in SCHEMES for s in items):
        raise ChangeError("schemes", "list http and/or https, or leave it out for both")
    return [s for s in SCHEMES if s in {x.lower() for x in items}]


def validate_change(kind: str, change: object) -> dict[str, Any]:
    """``change`` of a proposal of ``kind`` in normal form (host normalised, lists de-duplicated,
    defaults filled); ChangeError otherwise."""
    if kind not in KINDS:
        raise ChangeError("kind", f"unknown proposal kind {kind[:40]!r}: one of {', '.join(KINDS)}")
    if not isinstance(change, dict):
        raise ChangeError("change", "must be a mapping such as {host: api.example.com}")
    allowed = {
        "egress-route": ("host", "ports", "methods", "paths", "schemes"),
        "dlp-exemption": ("host", "rule"),
        "model-tool": ("host", "tool"),
        "git-push": GIT_PUSH_KEYS,
        "budget": ("usd", "tokens"),
    }[kind]
    unknown = sorted(set(map(str, change)) - set(allowed))
    if unknown:
        raise ChangeError(unknown[0], f"unknown key; a {kind} change has {', '.join(allowed)}")
    if kind == "git-push":
        return _git_push(change)
    if kind == "budget":
        problem = budget_problem(change)
        if problem is not None:
            key, _, rest = problem.partition(": ")
            raise ChangeError(key, rest) if key in ("usd", "tokens") and rest else ChangeError("change", problem)
        return parse_budget(change).to_doc()
    host = _host(change.get("host"))
    if kind == "egress-route":
        return {
            "host": host,
            "ports": _ports(change.get("ports")),
            "methods": _methods(change.get("methods")),
            "paths": _paths(change.get("paths")),
            "schemes": _schemes(change.get("schemes")),
        }
    if kind == "dlp-exemption":
        rule = change.get("rule")
        if not isinstance(rule, str) or rule_problem(rule) is not None:
            raise ChangeError("rule", "name the gitleaks rule that blocked the request, e.g. generic-api-key")
        return {"host": host, "rule": rule}
    tool = change.get("tool")
    if tool not in MODEL_TOOLS:
        raise ChangeError("tool", f"one of {', '.join(MODEL_TOOLS)}")
    return {"host": host, "tool": tool}


GIT_PUSH_KEYS = ("branch", "new", "home", "base", "rewrites", "commits")


def branch_problem(branch: object) -> str | None:
    """Why ``branch`` is not a branch name a git push may bring home, else None."""
    if not isinstance(branch, str) or not branch or len(branch) > MAX_BRANCH:
        return f"must be a branch name of at most {MAX_BRANCH} characters"
    if _BAD_BRANCH_RE.search(branch) or branch == "@":
        return f"{branch[:80]!r} is not a valid branch name"
    return None


def home_ref(slug: str, branch: str) -> str:
    """The one ref an approved push of ``branch`` from bottle ``slug`` writes at home."""
    return f"{HOME_REF_PREFIX}{slug}/{branch}"


def _git_push(change: dict[Any, Any]) -> dict[str, Any]:
    missing = [k for k in GIT_PUSH_KEYS if k not in change]
    if missing:
        raise ChangeError(missing[0], "missing; the git gate writes every key of a git-push change")
    problem = branch_problem(change["branch"])
    if problem is not None:
        raise ChangeError("branch", problem)
    if not isinstance(change["new"], str) or not _SHA_RE.match(change["new"]):
        raise ChangeError("new", "must be a full commit id (40 hex digits)")
    for key in ("home", "base"):
        if change[key] is not None and (not isinstance(change[key], str) or not _SHA_RE.match(change[key])):
            raise ChangeError(key, "must be a full commit id (40 hex digits) or null")
    if not isinstance(change["rewrites"], bool):
        raise ChangeError("rewrites", "must be true or false")
    commits = change["commits"]
    if not isinstance(commits, int) or isinstance(commits, bool) or commits < 0:
        raise ChangeError("commits", "must be a count of commits")
    return {k: change[k] for k in GIT_PUSH_KEYS}


def narrower_problem(kind: str, final: dict[str, Any], asked: dict[str, Any]) -> ChangeError | None:
    """Why the operator's ``final`` change widens what was ``asked`` (both in normal form), else
    None: an operator may narrow a request, never widen it."""
    if kind == "git-push":
        if final != asked:
            return ChangeError(kind, f"can be approved or rejected as pushed ({summary(kind, asked)}), not changed")
        return None
    if kind == "budget":
        return None  # the operator sets the amounts: modify may raise or lower them
    if kind != "egress-route":
        if final != asked:
            what = asked.get("rule") or asked.get("tool")
            return ChangeError(kind, f"can be approved or rejected as asked ({what} on {asked['host']}), not changed")
        return None
    if not host_within(final["host"], asked["host"]):
        return ChangeError("host", f"'{final['host']}' is not within the asked host '{asked['host']}'")
    wider_ports = sorted(set(final["ports"]) - set(asked["ports"]))
    if wider_ports:
        return ChangeError("ports", f"{wider_ports} were not asked for (asked: {asked['ports']})")
    if asked["methods"] and (not final["methods"] or set(final["methods"]) - set(asked["methods"])):
        return ChangeError("methods", f"only a subset of the asked methods {asked['methods']} can be allowed")
    if set(final["schemes"]) - set(asked["schemes"]):
        return ChangeError("schemes", f"only a subset of the asked schemes {asked['schemes']} can be allowed")
    if asked["paths"]:
        if not final["paths"]:
            return ChangeError("paths", f"'any path' is wider than the asked paths {asked['paths']}")
        import fnmatch

        for p in final["paths"]:
            # fnmatch reads the final glob as text: its '*' is matched by an asked '*' only, so a
            # final glob passes only when every path it matches is also matched by an asked glob.
            if not any(fnmatch.fnmatchcase(p, a) for a in asked["paths"]):
                return ChangeError("paths", f"'{p}' is not within the asked paths {asked['paths']}")
    return None


def summary(kind: str, change: dict[str, Any]) -> str:
    """One line naming all of what is asked (agent text included: render it inert)."""
    if kind == "egress-route":
        methods = ",".join(change.get("methods") or []) or "any method"
        paths = " ".join(change.get("paths") or []) or "any path"
        ports = ",".join(str(p) for p in change.get("ports") or [])
        schemes = change.get("schemes") or list(SCHEMES)
        prefix = "" if set(schemes) == set(SCHEMES) else "+".join(schemes) + " "
        return f"{prefix}{methods} {change.get('host')}:{ports} {paths}"
    if kind == "git-push":
        n = change.get("commits")
        rewrites = ", rewrites history" if change.get("rewrites") else ""
        tip = str(change.get("new") or "")[:12]
        return f"git push of branch {change.get('branch')} at {tip} ({n} commit{'' if n == 1 else 's'}{rewrites})"
    if kind == "model-tool":
        return f"model tool {change.get('tool')} on {change.get('host')}"
    if kind == "budget":
        try:
            return f"raise the budget to {parse_budget(change).describe()}"
        except (TypeError, ValueError):
            return "raise the budget"
    return f"DLP exemption: rule {change.get('rule')} on {change.get('host')}"


# --- proposals ----------------------------------------------------------------------------------


def new_proposal(
    slug: str, kind: str, change: dict[str, Any], reason: str, *, draft: bool = False, **extra: Any
) -> dict[str, Any]:
    """A pending proposal, every key of the format set."""
    data: dict[str, Any] = {
        "version": SCHEMA_VERSION,
        "id": new_id(),
        "slug": slug,
        "kind": kind,
        "change": change,
        "reason": reason,
        "draft": draft,
        "created_at": now_iso(),
        "status": "pending",
        "decision": None,
    }
    if draft:
        data.update(count=1, last_seen=data["created_at"])
    data.update(extra)
    return data


def well_formed(data: object, pid: str) -> bool:
    """Whether ``data`` (read from ``<pid>.json``) is a proposal; a torn or foreign file is not."""
    return (
        isinstance(data, dict)
        and is_id(pid)
        and data.get("id") == pid
        and data.get("kind") in KINDS
        and data.get("status") in STATUSES
        and isinstance(data.get("change"), dict)
        and isinstance(data.get("slug"), str)
    )


class Queue:
    """The proposal files of one bottle's queue folder."""

    def __init__(self, folder: str | os.PathLike[str]) -> None:
        self.folder = os.fspath(folder)

    def lock(self) -> AbstractContextManager[None]:
        """The queue's one lock: every read-modify-write of a proposal or of routes.yaml holds it."""
        os.makedirs(self.folder, exist_ok=True)
        return locked(os.path.join(self.folder, layout.QUEUE_LOCK))

    def path(self, pid: str) -> str:
        if not is_id(pid):
            raise ChangeError("id", f"{str(pid)[:80]!r} is not a proposal id")
        return os.path.join(self.folder, f"{pid}.json")

    def read(self, pid: str) -> dict[str, Any] | None:
        """The proposal ``pid``, or None when there is none (or the file is not a proposal)."""
        try:
            with open(self.path(pid), encoding="utf-8") as f:
                data = json.load(f)
        except (OSError, ValueError, RecursionError):
            return None
        return data if well_formed(data, pid) else None

    def write(self, data: dict[str, Any]) -> None:
        atomic_write(self.path(data["id"]), json.dumps(data, indent=2) + "\n", mode=0o644)

    def prune_decided(self, keep: int | None = None) -> int:
        """Remove the oldest decided proposals beyond ``keep`` (by when they were decided), so the
        folder stays bounded however long a bottle lives; the audit log keeps every decision.
        Hold the lock. Returns how many were removed."""
        keep = layout.MAX_DECIDED if keep is None else keep
        decided = [p for p in self.all() if p.get("status") in DECIDED]
        if len(decided) <= keep:
            return 0
        when = lambda p: (str((p.get("decision") or {}).get("at") or p.get("created_at") or ""), p["id"])
        gone = sorted(decided, key=when)[: len(decided) - keep]
        for p in gone:
            try:
                os.unlink(self.path(p["id"]))
            except FileNotFoundError:
                pass
        return len(gone)

    def all(self) -> list[dict[str, Any]]:
        """Every proposal in the folder, oldest first."""
        try:
            names = os.listdir(self.folder)
        except FileNotFoundError:
            return []
        found = [p for n in names if n.endswith(".json") and is_id(n[:-5]) for p in [self.read(n[:-5])] if p]
        return sorted(found, key=lambda p: (str(p.get("created_at", "")), p["id"]))


# --- applying a decision -------------------------------------------------------------------------


class Conflict(Exception):
    """A commit found the queue or the policy not as its decider read them."""

    def __init__(self, problem: str, current: dict[str, Any] | None = None) -> None:
        super().__init__(problem)
        self.current = current  # the proposal as it is now, when it was decided meanwhile


def commit(
    queue: Queue,
    routes: str | os.PathLike[str],
    *,
    expect_policy: str,
    policy: str | None,
    pending: str | None,
    proposal: dict[str, Any] | None,
) -> None:
    """Apply one decision or policy edit atomically, under the queue's lock: the proposal
    ``pending`` must still be pending and routes.yaml must still read ``expect_policy`` (what the
    decider computed from), else Conflict and nothing is written. Then the new ``policy`` (checked
    as egress would load it) replaces routes.yaml, and after it the decided ``proposal`` is
    written (a crash between leaves it pending; deciding again adds nothing twice). The host runs
    this on a local bottle's folder; the bundle's control command runs it for a remote one."""
    from .policy import PolicyError, load_policy_text

    path = os.fspath(routes)
    with queue.lock():
        if pending is not None:
            current = queue.read(pending)
            if current is None:
                raise Conflict(f"proposal {pending} vanished from {queue.folder}")
            if current.get("status") != "pending":
                raise Conflict(f"proposal {pending} was decided meanwhile", current)
        try:
            with open(path, encoding="utf-8") as f:
                text = f.read()
        except FileNotFoundError:
            text = ""
        if text != expect_policy:
            raise Conflict(f"{path} changed meanwhile (a decision or an edit was applied)")
        if policy is not None and policy != text:
            try:
                load_policy_text(policy, path)  # never write what egress would refuse
            except PolicyError as e:
                raise ChangeError("policy", str(e)) from None
            atomic_write(path, policy, mode=0o600)
        if proposal is not None:
            queue.write(proposal)
