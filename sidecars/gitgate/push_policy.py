"""The git gate's pure rules: its config file, what a pushed ref update is, which refs may move,
which commits a push brings (the range gitleaks scans), and how a finding reads in the push output.
Plain values in and out (no subprocess), shared by the daemon and the pre-receive hook.
"""

from __future__ import annotations

import fnmatch
import json
import re
from dataclasses import dataclass

ZERO = "0" * 40
CONFIG_KEYS = {
    "version": int, "upstream": str, "repo": str, "branch": str, "protected": list,
    "credentials_env": (str, type(None)), "port": int, "listen_alias": str, "refresh_timeout_seconds": int,
    "first_mirror_timeout_seconds": int,
}
_REPO_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9._-]{0,99}$")
_SHA_RE = re.compile(r"^[0-9a-f]{40}$")


class GateError(Exception):
    """A one-line problem the gate reports and acts on (refuses to start, or refuses a push)."""


@dataclass(frozen=True)
class GateConfig:
    upstream: str
    repo: str
    branch: str
    protected: tuple[str, ...]
    credentials_env: str | None
    port: int
    listen_alias: str
    refresh_timeout_seconds: int
    first_mirror_timeout_seconds: int


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
        if not isinstance(raw[key], kind) or isinstance(raw[key], bool):
            raise GateError(f"{path}: {key} has the wrong type")
    if raw["version"] != 1:
        raise GateError(f"{path}: version {raw['version']} is not understood (this gate reads version 1)")
    if not _REPO_RE.match(raw["repo"]):
        raise GateError(f"{path}: repo {raw['repo']!r} is not a plain repository name")
    if not all(isinstance(p, str) and p for p in raw["protected"]):
        raise GateError(f"{path}: protected must be a list of branch names or globs")
    if not 0 < raw["port"] < 65536 or raw["refresh_timeout_seconds"] < 1 or raw["first_mirror_timeout_seconds"] < 1:
        raise GateError(f"{path}: port or a timeout is out of range")
    return GateConfig(
        upstream=raw["upstream"], repo=raw["repo"], branch=raw["branch"], protected=tuple(raw["protected"]),
        credentials_env=raw["credentials_env"], port=raw["port"], listen_alias=raw["listen_alias"],
        refresh_timeout_seconds=raw["refresh_timeout_seconds"],
        first_mirror_timeout_seconds=raw["first_mirror_timeout_seconds"],
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
        return self.ref[len("refs/heads/"):] if self.ref.startswith("refs/heads/") else None

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


def protected_pattern(branch: str, protected: tuple[str, ...]) -> str | None:
    """The first entry of git.protected that names ``branch`` (exact name or fnmatch glob).

    Globs match across '/' too (``release/*`` covers ``release/1/hotfix``): a protected family
    of branches must not be escaped by nesting a name one level deeper."""
    for pattern in protected:
        if fnmatch.fnmatchcase(branch, pattern):
            return pattern
    return None


def refusal(update: RefUpdate, protected: tuple[str, ...]) -> str | None:
    """Why the gate refuses this ref update before scanning anything, or None."""
    if update.branch is None and not update.ref.startswith("refs/tags/"):
        return f"{update.ref}: only branches (refs/heads/*) and tags (refs/tags/*) can be pushed through the gate"
    if update.branch is not None:
        pattern = protected_pattern(update.branch, protected)
        if pattern is not None:
            verb = "deleted" if update.deleted else "pushed"
            return f"{update.ref}: branch {update.branch!r} is protected (git.protected: {pattern!r}) and cannot be {verb}; push another branch and open a review"
    return None


def push_range(update: RefUpdate) -> list[str]:
    """git-log arguments selecting exactly the commits this update brings.

    A new ref brings what no existing ref reaches (pre-receive runs before refs move, so ``--all``
    is the repository as it was); an update brings ``old..new`` (for a force push, what ``new``
    has that ``old`` had not). A delete brings nothing."""
    if update.deleted:
        return []
    # A merge's own changes (an "evil merge") show only as a diff against its first parent;
    # without this, git log -p prints no patch for merges and gitleaks would never see them.
    merges = "--diff-merges=first-parent"
    if update.created:
        return [merges, update.new, "--not", "--all"]
    return [merges, f"{update.old}..{update.new}"]


@dataclass(frozen=True)
class Finding:
    rule: str
    file: str
    line: int
    commit: str

    def describe(self) -> str:
        return f"{self.rule} in {self.file} line {self.line} (commit {self.commit[:12]}); secret REDACTED"


def report_items(report: str) -> list[dict]:
    """gitleaks' JSON report as a list of findings (each a dict of its fields)."""
    try:
        items = json.loads(report or "[]")
    except json.JSONDecodeError as e:
        raise GateError(f"gitleaks wrote a report that is not JSON ({e})") from None
    if not isinstance(items, list) or not all(isinstance(i, dict) for i in items):
        raise GateError("gitleaks wrote a report that is not a list of findings")
    return items


def findings(items: list[dict]) -> list[Finding]:
    """gitleaks' findings reduced to what may be shown: never Secret or Match, even redacted."""
    found = {Finding(str(i.get("RuleID", "?")), str(i.get("File", "?")), int(i.get("StartLine") or 0), str(i.get("Commit", "")))
             for i in items}
    return sorted(found, key=lambda f: (f.commit, f.file, f.line, f.rule))


@dataclass(frozen=True)
class Message:
    """A commit's or an annotated tag's message: gitleaks' git mode reads patches, not these."""

    kind: str  # "commit message" | "tag message"
    object_id: str
    text: str


def message_text(messages: list[Message]) -> tuple[str, list[int]]:
    """All messages as one text for gitleaks stdin, and the line (1-based) each one starts on."""
    starts, lines = [], []
    for m in messages:
        starts.append(len(lines) + 1)
        lines.extend(m.text.split("\n"))
    return "\n".join(lines), starts


def locate_in_messages(messages: list[Message], starts: list[int], rule: str, line: int) -> Finding:
    """The finding at ``line`` of message_text's text, as a line of the message it falls in."""
    index = max((i for i, start in enumerate(starts) if start <= line), default=0)
    m = messages[index]
    return Finding(rule, m.kind, line - starts[index] + 1, m.object_id)


def rejection_lines(ref: str, findings: list[Finding]) -> list[str]:
    """What the agent sees (as ``remote: ...``) when its push carries secrets."""
    noun = "secret" if len(findings) == 1 else "secrets"
    lines = [f"git-gate: push of {ref} rejected: gitleaks found {len(findings)} {noun}; nothing was sent upstream"]
    lines += [f"git-gate:   {f.describe()}" for f in findings]
    lines.append("git-gate: remove the secret from every pushed commit (rewrite them, e.g. git commit --amend or git rebase -i) and push again")
    return lines

