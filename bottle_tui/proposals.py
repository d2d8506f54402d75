"""Proposals on the host: listing them, deciding them, and the policy changes a decision makes
(DESIGN.md §5).

The format of a proposal, its ids, the queue's lock and the validation of a change are the
contract's (``bottle_contract.proposal``), which the bundle's supervise daemon uses too; so is
routes.yaml (``bottle_contract.policy``). This module adds what only the host does: deciding.

Scope ``always`` adds the route for good; ``once`` adds it with ``once: <proposal id>``, which
egress admits for one request and supervise withdraws (setting ``once_used`` on the proposal)
as soon as egress logs that request.

A decision is computed from the queue and routes.yaml as read, and written by the contract's
``commit`` (through ``bottle_files``: the bottle's folder here, or the engine for a bottle on
another machine) under the queue's lock, which the daemon takes too, only if neither changed
meanwhile: two deciders racing give one decision, and the other gets "already decided".
A ``git-push`` (the git gate held a clean push of a bottle whose upstream is a local repository)
is applied by bringing the branch home (``local_repo.bring_home``: one ref under
``refs/heads/bottle/<slug>/``), also before the proposal is marked decided. One held on its way
to an https upstream (``git.review: true``) is pushed there by the gate once it is approved.

Applying an approval rewrites ``state/<slug>/egress/routes.yaml`` before the proposal is marked
decided (a crash in between leaves it pending, and approving again adds nothing twice), then
asks the bundle to reload. Every decision is appended to ``state/<slug>/audit.jsonl`` and
``<home>/audit.jsonl``.
"""

from __future__ import annotations

import getpass
import json
import os
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from bottle_contract import layout
from bottle_contract import proposal as contract
from bottle_contract.files import append_jsonl
from bottle_contract.policy import Policy, PolicyError, Route, load_policy_text, yaml_text
from bottle_contract.policy import parse_policy as parse_policy_doc
from bottle_contract.proposal import DECIDED, KINDS, MAX_NOTE, SCOPES, STATUSES, ChangeError, now_iso
from bottle_contract.usage import UsageError, load_metering, parse_budget, write_metering

from . import local_repo
from .bottle_files import BottleFiles, Conflict, FilesFor, LocalFiles, local_files
from .errors import BottleError
from .state import AUDIT_LOG_CAP, StateDir, all_state_dirs, state_dir

__all__ = ["DECIDED", "KINDS", "SCOPES", "STATUSES"]

# A decision that meets a policy changed meanwhile is made again on the new one, this often.
COMMIT_TRIES = 5


class AlreadyDecided(BottleError):
    """Someone else decided this proposal first."""


def check_id(pid: str) -> str:
    if not contract.is_id(pid):
        raise BottleError(f"'{pid!s:.80}' is not a proposal id: use one that `bottle-tui proposals ls` prints")
    return pid


def queue(state: StateDir) -> contract.Queue:
    return contract.Queue(state.queue)


# --- reading -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Proposal:
    data: dict[str, Any]
    path: Path

    @property
    def id(self) -> str:
        return str(self.data["id"])

    @property
    def slug(self) -> str:
        return str(self.data["slug"])

    @property
    def kind(self) -> str:
        return str(self.data["kind"])

    @property
    def status(self) -> str:
        return str(self.data["status"])

    @property
    def change(self) -> dict[str, Any]:
        change: dict[str, Any] = self.data["change"]
        return change

    @property
    def pending(self) -> bool:
        return self.status == "pending"

    def summary(self) -> str:
        """One line naming all of what is asked (agent text included: render it inert)."""
        return contract.summary(self.kind, self.change)


def load(path: Path) -> Proposal | None:
    """The proposal in ``path``, or None when it is not one (a torn or foreign file is skipped)."""
    data = contract.Queue(path.parent).read(path.stem) if contract.is_id(path.stem) and path.suffix == ".json" else None
    return Proposal(data, path) if data is not None else None


def list_bottle(state: StateDir, *, include_decided: bool = True, files: BottleFiles | None = None) -> list[Proposal]:
    """The proposals of one bottle (read through ``files``: its local folder by default)."""
    found = (files or LocalFiles(state)).proposals()
    return [
        Proposal(d, state.queue / f"{d['id']}.json")
        for d in found
        if d["slug"] == state.slug and (include_decided or d["status"] == "pending")
    ]


def list_all(home: Path, *, include_decided: bool = False, files_for: FilesFor = local_files) -> list[Proposal]:
    """Proposals of every bottle of ``home``, oldest first; pending ones only unless asked. A
    bottle whose files cannot be reached now (a remote bundle that is not running: a failed
    bring-up's state folder, a node that is down) has none to decide."""
    found: list[Proposal] = []
    for s in all_state_dirs(home):
        try:
            found += list_bottle(s, include_decided=include_decided, files=files_for(s))
        except BottleError:
            continue  # not reachable now: `ls` shows why
    return sorted(found, key=lambda p: (p.data.get("created_at", ""), p.id))


def find(home: Path, pid: str, files_for: FilesFor = local_files) -> tuple[StateDir, Proposal]:
    check_id(pid)
    for s in all_state_dirs(home):
        local = load(s.queue / f"{pid}.json")
        if local is not None and local.slug == s.slug:
            return s, local
    for s in all_state_dirs(home):
        try:
            files = files_for(s)
            if isinstance(files, LocalFiles):
                continue  # read above
            remote = list_bottle(s, files=files)
        except BottleError:
            continue  # not reachable now (see list_all)
        for p in remote:
            if p.id == pid:
                return s, p
    raise BottleError(f"no proposal '{pid}' in {home / 'state'}: `bottle-tui proposals ls --all` lists them")


def create(state: StateDir, kind: str, change: dict[str, Any], reason: str, *, draft: bool = False) -> Proposal:
    """A new pending proposal (the supervise daemon has its own writer; this one serves tests and tools)."""
    if kind not in KINDS:
        raise BottleError(f"unknown proposal kind '{kind}': use one of {', '.join(KINDS)}")
    data = contract.new_proposal(state.slug, kind, change, reason, draft=draft)
    q = queue(state)
    with q.lock():
        q.write(data)
    return Proposal(data, state.queue / f"{data['id']}.json")


# --- validating a change -------------------------------------------------------------------------


def _change_error(e: ChangeError) -> BottleError:
    return BottleError(f"change.{e.key}: {e.problem}")


def validate_change(kind: str, change: object, *, source: Path | None = None) -> dict[str, Any]:
    """A change in normal form (hosts lower-case, lists de-duplicated); a one-line error otherwise."""
    try:
        return contract.validate_change(kind, change)
    except ChangeError as e:
        raise (BottleError(f"{source}: change.{e.key}: {e.problem}") if source else _change_error(e)) from None


def check_narrower(kind: str, final: dict[str, Any], asked: dict[str, Any]) -> None:
    """An operator's modification may narrow what was asked, never widen it."""
    problem = contract.narrower_problem(kind, final, validate_change(kind, asked))
    if problem is not None:
        raise _change_error(problem)


# --- the policy in force (routes.yaml) -----------------------------------------------------------


def routes_path(state: StateDir) -> Path:
    return state.routes


def parse_policy(text: str, source: Path) -> dict[str, Any]:
    """routes.yaml text checked with the contract's rules (one-line errors naming the key); the
    document as loaded."""
    try:
        load_policy_text(text, str(source))
    except PolicyError as e:
        raise BottleError(str(e)) from None
    import yaml

    doc: dict[str, Any] = yaml.safe_load(text)
    return doc


def read_policy(state: StateDir, files: BottleFiles | None = None) -> tuple[str, dict[str, Any]]:
    """routes.yaml in force (through ``files``: the local folder by default), text and document."""
    files = files or LocalFiles(state)
    text = files.policy_text()
    if not text:
        raise BottleError(f"cannot read {files.where}: is {state.slug} a running bottle of this home?")
    return text, parse_policy(text, routes_path(state))


def _policy(doc: dict[str, Any], source: Path | None) -> Policy:
    try:
        return parse_policy_doc(doc, str(source or "routes.yaml"))
    except PolicyError as e:
        raise BottleError(str(e)) from None


def policy_with(
    doc: dict[str, Any], kind: str, change: dict[str, Any], *, source: Path | None = None, once: str | None = None
) -> dict[str, Any]:
    """The policy ``doc`` with an approved change in it (pure; ``doc`` itself is left as it was).

    A route: added with every key explicit and the bottle's DLP settings, unless the same route is
    there for good already; ``once`` (a proposal id) marks it as allowed for one request. A DLP
    exemption or a model tool: added to every route of the host. A budget is not routes.yaml's
    (``apply_budget``)."""
    if kind == "budget":
        raise BottleError("a budget change applies to metering.json, not routes.yaml")
    policy = _policy(doc, source)
    if kind in ("dlp-exemption", "model-tool"):
        targets = [i for i, r in enumerate(policy.routes) if r.host == change["host"]]
        if not targets:
            where = f" in {source}" if source else ""
            what = "a DLP exemption" if kind == "dlp-exemption" else "a model tool"
            raise BottleError(f"no route for {change['host']}{where}: {what} applies to a route; allow the route first")
        routes = list(policy.routes)
        for i in targets:
            r = routes[i]
            if kind == "dlp-exemption":
                rules = tuple(dict.fromkeys((*r.dlp.disabled_rules, change["rule"])))
                routes[i] = replace(r, dlp=replace(r.dlp, disabled_rules=rules))
            else:
                routes[i] = replace(r, model_tools=tuple(dict.fromkeys((*r.model_tools, change["tool"]))))
        new = replace(policy, routes=tuple(routes))
    else:
        route = Route(
            host=change["host"],
            ports=tuple(change["ports"]),
            methods=tuple(change["methods"]),
            paths=tuple(change["paths"]),
            schemes=tuple(change.get("schemes") or ("http", "https")),
            auth=None,
            dlp=policy.dlp,
            once=once,
        )
        if any(
            r.once is None and r.identity() == route.identity() and set(route.schemes) <= set(r.schemes)
            for r in policy.routes
        ):
            return doc
        new = replace(policy, routes=(*policy.routes, route))
    return doc if new == policy else new.to_doc()


def budget_change_text(state: StateDir, change: dict[str, Any]) -> str:
    """What approving a budget change does, in one sentence (the budget in force from metering.json)."""
    try:
        final = parse_budget(validate_change("budget", change))
        current = load_metering(state.metering).budget
    except (BottleError, UsageError) as e:
        return f"the change cannot be applied as asked: {e}"
    was = current.describe() if current else "no budget"
    return f"metering.json: the budget goes from {was} to {final.describe()}; refused model calls go through again"


def budget_refusal(pid: str, state: StateDir, files: BottleFiles) -> str | None:
    """Why budget proposal ``pid`` cannot be approved, in one line, when the bottle's
    metering.json is not its state folder's (a swarm bottle's is on its node, which no host call
    writes yet: apply_budget writes the state folder's); None when it can."""
    if isinstance(files, LocalFiles):
        return None
    return (
        f"proposal {pid}: a budget change cannot be applied to {state.slug} yet (its metering.json is on "
        f"the volume of its node, beside {files.where}): reject it (`bottle-tui proposals reject {pid}`), "
        "or stop the bottle and start a new one with a larger budget: in its bottle file"
    )


def apply_budget(state: StateDir, change: dict[str, Any]) -> bool:
    """Set the bottle's budget to an approved ``change`` in metering.json, which egress reloads
    on its next model call; False when it was so already. ``decide`` calls it once the decision is
    committed (a budget proposal is decided once, so no other writer races it)."""
    try:
        current = load_metering(state.metering)
    except UsageError as e:
        raise BottleError(f"{e}; the budget cannot be changed until the file is fixed") from None
    new = replace(current, budget=parse_budget(change))
    if new == current:
        return False
    write_metering(state.metering, new)
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
class Decision:
    proposal: Proposal
    policy_changed: bool
    home: str | None = None  # a git-push approved: the ref it moved at home, and how


def local_upstream(state: StateDir) -> Path | None:
    """The operator's repository a bottle's approved pushes come home to (from its metadata)."""
    path = (state.read_metadata() or {}).get("local_upstream")
    return Path(path) if isinstance(path, str) and path else None


def gate_mirror(state: StateDir) -> Path:
    """The gate's mirror in a bottle's state folder (its repo name from gate.json)."""
    path = state.git_gate / layout.GATE_CONFIG
    try:
        repo = json.loads(path.read_text(encoding="utf-8"))["repo"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise BottleError(f"cannot read {path} ({exc}); is {state.slug} a bottle with git?") from None
    if not isinstance(repo, str) or "/" in repo or repo.startswith("."):
        raise BottleError(f"{path}: repo is not a plain repository name")
    return state.mirror_repo(repo)


def bring_home(state: StateDir, pid: str, change: dict[str, Any]) -> local_repo.BroughtHome:
    repo = local_upstream(state)
    if repo is None:
        raise BottleError(f"proposal {pid}: bottle {state.slug} has no local upstream to bring the push home to")
    return local_repo.bring_home(repo, gate_mirror(state), state.slug, pid, change)


def git_push_target(p: Proposal) -> str:
    """Where approving a git-push proposal puts its branch: a ref in the operator's repository, or
    (the gate held it on its way to an https upstream: it noted upstream's branch then) upstream."""
    branch = str(p.change.get("branch"))
    if "upstream_at_push" in p.data:
        return f"upstream's {branch} (the git gate pushes it there)"
    return contract.home_ref(p.slug, branch)


def git_push_diff(state: StateDir, p: Proposal) -> str:
    """The diff a git-push proposal brings, from the gate's mirror (blocking)."""
    try:
        change = validate_change(p.kind, p.change)
        return local_repo.push_diff(gate_mirror(state), change)
    except BottleError as exc:
        return f"the diff cannot be shown: {exc}"


def decide(
    home: Path,
    pid: str,
    action: str,
    *,
    by: str,
    scope: str = "always",
    change: object = None,
    note: str = "",
    files_for: FilesFor = local_files,
) -> Decision:
    """Approve, modify or reject ``pid`` exactly once. ``change`` (modify only) is the operator's
    narrower version of what was asked. Raises AlreadyDecided when someone else was first.

    The decision is computed from the queue and the policy as read, then committed (the
    contract's commit, through ``files``) only if neither changed meanwhile: a policy that did is
    read again, a proposal decided by someone else is AlreadyDecided."""
    if action not in ("approve", "modify", "reject"):
        raise BottleError(f"unknown decision '{action}': use approve, modify or reject")
    if scope not in SCOPES:
        raise BottleError(f"unknown scope '{scope}': use once or always")
    if not isinstance(note, str) or len(note) > MAX_NOTE:
        raise BottleError(f"the note is longer than {MAX_NOTE} characters: shorten it")
    state, found = find(home, pid, files_for)
    files = files_for(state)
    refused = budget_refusal(pid, state, files) if found.kind == "budget" and action != "reject" else None
    if refused is not None:
        raise BottleError(refused)
    home_line: str | None = None
    for attempt in range(COMMIT_TRIES):
        # The first attempt decides on the proposal as found; a retry reads it again.
        current = found if attempt == 0 else next((p for p in list_bottle(state, files=files) if p.id == pid), None)
        if current is None:
            raise BottleError(f"proposal {pid} vanished from {files.where}")
        if not current.pending:
            raise _already(current.data)
        asked = current.change
        final: dict[str, Any] | None = None
        if action != "reject":
            final = validate_change(current.kind, change if action == "modify" else asked)
            if action == "modify":
                check_narrower(current.kind, final, asked)
        # A route allowed once carries this proposal's id: egress admits one request through it
        # and supervise withdraws it by that id.
        once = pid if scope == "once" and current.kind == "egress-route" else None
        before = files.policy_text()
        policy: str | None = None
        if current.kind == "git-push":
            # A local upstream's branch comes home here; an https upstream's the gate forwards,
            # with its credential, once it reads this decision (sidecars/gitgate/held.py).
            if final is not None and home_line is None and local_upstream(state) is not None:
                home_line = bring_home(state, pid, final).line()
        elif current.kind == "budget":
            pass  # metering.json, which only the host writes: applied once the decision is committed
        elif final is not None:
            doc = parse_policy(before, routes_path(state)) if before else {}
            new = policy_with(doc, current.kind, final, source=routes_path(state), once=once)
            policy = yaml_text(new) if new != doc else None
        changed = policy is not None
        status = {"approve": "approved", "modify": "modified", "reject": "rejected"}[action]
        decision = {
            "by": by,
            "at": now_iso(),
            "scope": scope if final is not None else None,
            "change": final,
            "note": note,
            **({"home": home_line} if home_line is not None else {}),
        }
        data = {**current.data, "status": status, "decision": decision}
        try:
            files.commit(expect_policy=before, policy=policy, pending=pid, proposal=data)
        except Conflict as exc:
            if exc.current is not None:
                raise _already(exc.current) from None
            continue  # the policy changed under us: read it again and decide on the new one
        break
    else:
        raise BottleError(f"proposal {pid}: the policy of {state.slug} kept changing while deciding; decide again")
    if current.kind == "budget" and final is not None:
        changed = apply_budget(state, final)
    record = {
        "at": decision["at"],
        "by": by,
        "slug": state.slug,
        "id": pid,
        "kind": current.kind,
        "status": status,
        "scope": decision["scope"],
        "asked": asked,
        "change": final,
        "note": note,
        "draft": bool(current.data.get("draft")),
        "policy_changed": changed,
        **({"home": home_line} if home_line is not None else {}),
    }
    for path in audit_paths(home, state):
        append_audit(path, record)
    return Decision(Proposal(data, current.path), changed, home_line)


def _already(data: dict[str, Any]) -> AlreadyDecided:
    d = data.get("decision") or {}
    return AlreadyDecided(
        f"proposal {data.get('id')} was already {data.get('status')} by {d.get('by', '?')} at {d.get('at', '?')}"
    )


def audit_policy_edit(home: Path, state: StateDir, by: str, before: str, after: str) -> None:
    record = {
        "at": now_iso(),
        "by": by,
        "slug": state.slug,
        "kind": "policy-edit",
        "status": "edited",
        "before": before,
        "after": after,
    }
    for path in audit_paths(home, state):
        append_audit(path, record)


def save_policy_text(
    home: Path, state: StateDir, before: str, after: str, by: str, files: BottleFiles | None = None
) -> None:
    """Replace routes.yaml with an operator's edit of ``before`` (validated), unless a decision
    changed it meanwhile; audited. The console's `e` uses it (reload the bundle afterwards)."""
    parse_policy(after, routes_path(state))
    files = files or LocalFiles(state)
    try:
        files.commit(expect_policy=before, policy=after, pending=None, proposal=None)
    except Conflict:
        raise BottleError(
            f"{files.where} changed while you edited it (a decision was applied): edit it again"
        ) from None
    audit_policy_edit(home, state, by, before, after)


def state_for(home: Path, slug: str) -> StateDir:
    s = state_dir(home, slug)
    if not s.path.is_dir():
        raise BottleError(f"no state folder for '{slug}' in {home / 'state'}: `bottle-tui ls` lists running bottles")
    return s
