"""The git gate's pure rules: its config file, what a pushed ref update is, which refs may move
(protected names in every namespace and spelling), and how a finding reads in the push output.
Plain values in and out (no subprocess), shared by the daemon and the pre-receive hook.
"""

from __future__ import annotations

import fnmatch
import json
import re
from dataclasses import dataclass

ZERO = "0" * 40
CONFIG_KEYS = {
    "version": int,
    # null: the upstream is a repository on the operator's machine; the host made the mirror from
    # it and brings approved pushes home itself (the gate never sees the operator's paths).
    "upstream": (str, type(None)),
    "review": bool,  # hold clean pushes in the mirror as git-push proposals instead of forwarding them
    "slug": str,  # the bottle, for the proposals the gate queues
    "start": (str, type(None)),  # the tip of `branch` the host mirrored at bring-up (local upstreams)
    "repo": str,
    "branch": str,
    "protected": list,
    "credentials_env": (str, type(None)),
    "port": int,
    "listen_alias": str,
    "refresh_timeout_seconds": int,
    "first_mirror_timeout_seconds": int,
}
_REPO_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9._-]{0,99}$")
_SHA_RE = re.compile(r"^[0-9a-f]{40}$")


class GateError(Exception):
    """A one-line problem the gate reports and acts on (refuses to start, or refuses a push)."""


@dataclass(frozen=True)
class GateConfig:
    upstream: str | None
    repo: str
    branch: str
    protected: tuple[str, ...]
    credentials_env: str | None
    port: int
    listen_alias: str
    refresh_timeout_seconds: int
    first_mirror_timeout_seconds: int
    review: bool = False
    slug: str = ""
    start: str | None = None

    @property
    def local(self) -> bool:
        """The upstream is the operator's own repository, which only the host touches."""
        return self.upstream is None


def load_config(path: str) -> GateConfig:
    """gate.json as the host rendered it: every key present and typed, nothing defaulted here."""
    try:
        with open(path, encoding="utf-8") as f:
            raw = json.load(f)
    except OSError as e:
        raise GateError(f"cannot read {path}: {e.strerror or e}; the host writes it at bring-up") from None
    except json.JSONDecodeError as e:
        raise GateError(f"{path}: invalid JSON ({e}); restart the bottle to render it again") from None
    if not isinstance(raw, dict):
        raise GateError(f"{path}: expected a JSON object")
    for key in raw:
        if key not in CONFIG_KEYS:
            raise GateError(f"{path}: unknown key {key!r}")
    for key, kind in CONFIG_KEYS.items():
        if key not in raw:
            raise GateError(f"{path}: missing key {key!r}; the gate has no defaults of its own")
        if not isinstance(raw[key], kind) or (isinstance(raw[key], bool) and kind is not bool):
            raise GateError(f"{path}: {key} has the wrong type")
    if raw["version"] != 1:
        raise GateError(f"{path}: version {raw['version']} is not understood (this gate reads version 1)")
    if raw["upstream"] is None and not raw["review"]:
        raise GateError(f"{path}: a local upstream (upstream null) needs review: true; the host brings pushes home")
    if raw["start"] is not None and not _SHA_RE.match(raw["start"]):
        raise GateError(f"{path}: start must be a commit id or null")
    if not _REPO_RE.match(raw["repo"]):
        raise GateError(f"{path}: repo {raw['repo']!r} is not a plain repository name")
    if not all(isinstance(p, str) and p for p in raw["protected"]):
        raise GateError(f"{path}: protected must be a list of branch names or globs")
    if not 0 < raw["port"] < 65536 or raw["refresh_timeout_seconds"] < 1 or raw["first_mirror_timeout_seconds"] < 1:
        raise GateError(f"{path}: port or a timeout is out of range")
    return GateConfig(
        upstream=raw["upstream"],
        repo=raw["repo"],
        branch=raw["branch"],
        protected=tuple(raw["protected"]),
        credentials_env=raw["credentials_env"],
        port=raw["port"],
        listen_alias=raw["listen_alias"],
        refresh_timeout_seconds=raw["refresh_timeout_seconds"],
        first_mirror_timeout_seconds=raw["first_mirror_timeout_seconds"],
        review=raw["review"],
        slug=raw["slug"],
        start=raw["start"],
    )


@dataclass(frozen=True)
class RefUpdate:
    """One line of pre-receive's stdin: ``<old> <new> <ref>``."""

    old: str
    new: str
    ref: str

    @property
    def created(self) -> bool:
        return self.old == ZERO

    @property
    def deleted(self) -> bool:
        return self.new == ZERO

    @property
    def branch(self) -> str | None:
        return self.ref[len("refs/heads/") :] if self.ref.startswith("refs/heads/") else None

    @property
    def kind(self) -> str:
        return "create" if self.created else "delete" if self.deleted else "update"


def parse_updates(text: str) -> list[RefUpdate]:
    updates = []
    for line in text.splitlines():
        if not line.strip():
            continue
        parts = line.split()
        if len(parts) != 3 or not _SHA_RE.match(parts[0]) or not _SHA_RE.match(parts[1]):
            raise GateError(f"unexpected pre-receive input line {line[:100]!r}")
        updates.append(RefUpdate(*parts))
    return updates


# The prefixes git's own name resolution adds or strips: a name is protected under any of them.
_SPELLING_PREFIXES = ("refs/", "heads/", "tags/")


def spellings(name: str) -> list[str]:
    """``name`` and what it also reads as once git's prefixes are stripped from it: a branch
    ``refs/heads/main`` or ``heads/main``, a tag ``tags/main``, ``remotes/origin/main``."""
    found = [name]
    while True:
        for prefix in _SPELLING_PREFIXES:
            if name.startswith(prefix):
                name = name[len(prefix) :]
                break
        else:
            if not name.startswith("remotes/") or "/" not in name[len("remotes/") :]:
                return found
            name = name[len("remotes/") :].split("/", 1)[1]
        found.append(name)


def protected_pattern(name: str, protected: tuple[str, ...]) -> str | None:
    """The first entry of git.protected that names ``name`` (exact name or fnmatch glob), in any
    of its spellings and in any case (a case-insensitive upstream stores ``Main`` as ``main``).

    Globs match across '/' too (``release/*`` covers ``release/1/hotfix``): a protected family
    of branches must not be escaped by nesting a name one level deeper."""
    for spelling in spellings(name):
        for pattern in protected:
            if fnmatch.fnmatchcase(spelling.casefold(), pattern.casefold()):
                return pattern
    return None


def ref_name(ref: str) -> tuple[str, str] | None:
    """("branch" | "tag", short name) of a ref the gate lets through, else None."""
    for prefix, kind in (("refs/heads/", "branch"), ("refs/tags/", "tag")):
        if ref.startswith(prefix) and len(ref) > len(prefix):
            return kind, ref[len(prefix) :]
    return None


def refusal(update: RefUpdate, protected: tuple[str, ...], review: bool = False) -> str | None:
    """Why the gate refuses this ref update before scanning anything, or None.

    git.protected names names: a tag ``main`` would be what ``git log main`` shows upstream (git
    resolves tags before branches), so a protected name is refused in both namespaces."""
    named = ref_name(update.ref)
    if named is None:
        return f"{update.ref}: only branches (refs/heads/*) and tags (refs/tags/*) can be pushed through the gate"
    kind, name = named
    if review and kind == "tag":
        return f"{update.ref}: this bottle's pushes wait for the operator's review, which takes branches only; push a branch"
    verb = "deleted" if update.deleted else "pushed"
    if any(s.casefold() == "head" for s in spellings(name)):
        return f"{update.ref}: a {kind} named {name!r} reads as HEAD and cannot be {verb}; choose another name"
    pattern = protected_pattern(name, protected)
    if pattern is not None:
        return (
            f"{update.ref}: {kind} {name!r} is protected (git.protected: {pattern!r}, for branches "
            f"and tags alike) and cannot be {verb}; push another branch and open a review"
        )
    return None


@dataclass(frozen=True)
class Finding:
    """One secret gitleaks found in a pushed object: never the secret or the match itself."""

    rule: str
    file: str  # a path, or which part of a commit, tag or tree
    line: int
    object: str  # the commit that holds the blob, or the object itself
    kind: str  # what ``object`` is: commit | tag | tree | blob

    def describe(self) -> str:
        return f"{self.rule} in {self.file} line {self.line} ({self.kind} {self.object[:12]}); secret REDACTED"

    def sort_key(self) -> tuple:
        return (self.object, self.file, self.line, self.rule)


def report_items(report: str) -> list[dict]:
    """gitleaks' JSON report as a list of findings (each a dict of its fields)."""
    try:
        items = json.loads(report or "[]")
    except json.JSONDecodeError as e:
        raise GateError(f"gitleaks wrote a report that is not JSON ({e})") from None
    if not isinstance(items, list) or not all(isinstance(i, dict) for i in items):
        raise GateError("gitleaks wrote a report that is not a list of findings")
    return items


SHOWN = 30  # findings, refusals or refs one push shows the agent or writes to the push log


def ref_list(refs: list[str], shown: int = 3) -> str:
    """``a, b, c and 2,997 more refs``: a push of thousands of refs in one bounded line."""
    more = len(refs) - shown
    return ", ".join(refs[:shown]) + (f" and {more:,} more refs" if more > 0 else "")


def rejection_lines(refs: list[str], findings: list[Finding]) -> list[str]:
    """What the agent sees (as ``remote: ...``) when its push carries secrets."""
    noun = "secret" if len(findings) == 1 else "secrets"
    lines = [
        f"git-gate: push of {ref_list(refs)} rejected: gitleaks found {len(findings)} {noun}; nothing was sent upstream"
    ]
    lines += [f"git-gate:   {f.describe()}" for f in findings[:SHOWN]]
    if len(findings) > SHOWN:
        lines.append(f"git-gate:   ... and {len(findings) - SHOWN} more")
    lines.append(
        "git-gate: remove the secret from every pushed object (rewrite the commits, e.g. git commit --amend or "
        "git rebase -i; drop the tag) and push again"
    )
    return lines
