#!/usr/bin/env python3
"""The gate's pre-receive hook: refuse protected and foreign refs, scan exactly the pushed commits
with gitleaks, forward a clean push upstream, and accept it only when upstream accepted it.

Everything it prints on stderr reaches the agent's git as ``remote: ...``. Every decision is one
JSON line in the state folder's pushes.jsonl. It runs inside receive-pack's quarantine: the
pushed objects are readable (git and gitleaks inherit the environment) but no ref has moved yet.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor

# Imported through the git gate's pythonpath (daemons.json; git passes the environment to hooks).
from bottle_contract import layout
from bottle_contract.files import append_jsonl
from push_policy import (Finding, GateError, Message, RefUpdate, findings, load_config, locate_in_messages, message_text,
                         parse_updates, push_range, refusal, rejection_lines, report_items)
from upstream_git import git_env, push_argv, run_git, scrub  # noqa: E402

GITLEAKS = os.environ.get("GIT_GATE_GITLEAKS", "gitleaks")
GITLEAKS_CONFIG = os.environ.get("GIT_GATE_GITLEAKS_CONFIG", "/opt/gitleaks/gitleaks.toml")
SCAN_TIMEOUT = 300
PUSH_TIMEOUT = 300


def say(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def log_decision(state_dir: str, record: dict) -> None:
    record = {"time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), **record}
    cap = layout.PUSH_LOG_CAP
    append_jsonl(os.path.join(state_dir, layout.PUSH_LOG), record, max_bytes=cap.max_bytes, keep=cap.keep)


_SCANNED_RE = re.compile(r"(\d+) commits scanned")


def adds_lines(git_dir: str, log_opts: list[str]) -> bool:
    """Whether the range adds any line (gitleaks counts only commits with additions as scanned)."""
    proc = subprocess.run(["git", "--git-dir", git_dir, "log", "-p", "-U0", "--format=", *log_opts],
                          capture_output=True, timeout=SCAN_TIMEOUT)
    if proc.returncode != 0:
        raise GateError(f"cannot list the pushed commits: {proc.stderr.decode(errors='replace').strip()[:300]}")
    return any(line.startswith(b"+") and not line.startswith(b"+++ ") for line in proc.stdout.splitlines())


def run_gitleaks(mode: list[str], what: str, env: dict[str, str], stdin: str | None = None) -> tuple[list[dict], str]:
    """gitleaks with the gate's settings: its JSON findings (secrets redacted) and its log."""
    with tempfile.TemporaryDirectory(prefix="gitleaks-") as work:
        report = os.path.join(work, "report.json")
        argv = [
            GITLEAKS, *mode[:1], "--no-banner", "--no-color", "--log-level", "info", "--redact",
            "--config", GITLEAKS_CONFIG, "--report-format", "json", "--report-path", report,
            # The pushed content must not switch its own scan off: no inline `gitleaks:allow`, and
            # no .gitleaksignore (looked up in the working folder, an empty one here).
            "--ignore-gitleaks-allow", "--gitleaks-ignore-path", work, "--exit-code", "3", *mode[1:],
        ]
        try:
            proc = subprocess.run(argv, cwd=work, env=env, input=stdin, capture_output=True, text=True, timeout=SCAN_TIMEOUT)
        except subprocess.TimeoutExpired:
            raise GateError(f"gitleaks did not finish scanning {what} within {SCAN_TIMEOUT} s") from None
        except OSError as e:
            raise GateError(f"cannot run gitleaks ({e.strerror or e})") from None
        if proc.returncode not in (0, 3):
            last = (proc.stderr.strip().splitlines() or ["no output"])[-1]
            raise GateError(f"gitleaks failed on {what} (exit {proc.returncode}): {last[:300]}")
        with open(report, encoding="utf-8") as f:
            items = report_items(f.read())
        if proc.returncode == 3 and not items:
            raise GateError(f"gitleaks reported leaks in {what} but its report lists none")
        return items, proc.stderr


def scan_changes(git_dir: str, update: RefUpdate, log_opts: list[str]) -> list[Finding]:
    """gitleaks over the patches of the commits this update brings."""
    items, log = run_gitleaks(["git", "--log-opts=" + " ".join(log_opts), git_dir], update.ref, {**os.environ, "GIT_DIR": git_dir})
    # gitleaks says "0 commits scanned" and exits 0 when its git log fails: fail closed.
    scanned = _SCANNED_RE.search(log)
    if (scanned is None or scanned[1] == "0") and adds_lines(git_dir, log_opts):
        raise GateError(f"gitleaks scanned no commit of {update.ref} although it adds lines; nothing was sent upstream")
    return findings(items)


def messages(git_dir: str, update: RefUpdate, log_opts: list[str]) -> list[Message]:
    """The messages this update carries upstream: each new commit's, and an annotated tag's."""
    git = ["git", "--git-dir", git_dir]
    found = []
    out = subprocess.run([*git, "log", "--format=%H%x00%B%x1e", *log_opts], capture_output=True, text=True, timeout=SCAN_TIMEOUT)
    if out.returncode != 0:
        raise GateError(f"cannot list the pushed commits: {out.stderr.strip()[:300]}")
    for record in out.stdout.split("\x1e"):
        commit, sep, body = record.strip("\n").partition("\x00")
        if sep:
            found.append(Message("commit message", commit, body))
    kind = subprocess.run([*git, "cat-file", "-t", update.new], capture_output=True, text=True, timeout=60)
    if kind.stdout.strip() == "tag":
        tag = subprocess.run([*git, "cat-file", "tag", update.new], capture_output=True, text=True, timeout=60)
        found.append(Message("tag message", update.new, tag.stdout))
    return found


def scan_messages(git_dir: str, update: RefUpdate, log_opts: list[str]) -> list[Finding]:
    """gitleaks over commit and tag messages, which its git mode does not read."""
    found = messages(git_dir, update, log_opts)
    if not found:
        return []
    text, starts = message_text(found)
    items, _ = run_gitleaks(["stdin"], f"the messages of {update.ref}", dict(os.environ), stdin=text)
    return [locate_in_messages(found, starts, str(i.get("RuleID", "?")), int(i.get("StartLine") or 0)) for i in items]


def scan(git_dir: str, update: RefUpdate) -> list[Finding]:
    """Everything this update would carry upstream: patches and messages."""
    log_opts = push_range(update)
    if not log_opts:
        return []
    git_dir = os.path.abspath(git_dir)  # gitleaks runs in another folder
    # Two gitleaks processes side by side: most of each one's time is loading and compiling rules.
    with ThreadPoolExecutor(2) as pool:
        changes = pool.submit(scan_changes, git_dir, update, log_opts)
        notes = pool.submit(scan_messages, git_dir, update, log_opts)
        found = changes.result() + notes.result()
    return sorted(set(found), key=lambda f: (f.commit, f.file, f.line, f.rule))  # one list, in commit order


def decide(updates: list[RefUpdate], state_dir: str, git_dir: str) -> int:
    cfg = load_config(os.path.join(state_dir, "gate.json"))
    refs = [{"ref": u.ref, "kind": u.kind, "old": u.old, "new": u.new} for u in updates]

    def reject(reason: str, lines: list[str], **extra) -> int:
        for line in lines:
            say(line)
        log_decision(state_dir, {"decision": "rejected", "reason": reason, "refs": refs, **extra})
        return 1

    refused = [r for r in (refusal(u, cfg.protected) for u in updates) if r]
    if refused:
        return reject("refused", [f"git-gate: push rejected: {r}" for r in refused], details=refused)
    all_findings: dict[str, list[Finding]] = {}
    for u in updates:
        found = scan(git_dir, u)
        if found:
            all_findings[u.ref] = found
    if all_findings:
        lines = [line for ref, found in all_findings.items() for line in rejection_lines(ref, found)]
        shown = {ref: [f.__dict__ for f in found] for ref, found in all_findings.items()}
        return reject("secrets", lines, findings=shown)
    result = run_git(push_argv(cfg, updates), git_env(cfg, state_dir), PUSH_TIMEOUT)
    words = scrub(result.output, cfg)
    if not result.ok:
        lines = ["git-gate: upstream refused the push, so the gate did not take it either:"]
        lines += [f"git-gate:   {line}" for line in words.splitlines() if line.strip()] or ["git-gate:   (no message)"]
        lines.append("git-gate: fetch, integrate upstream's changes, and push again")
        return reject("upstream-refused", lines, upstream=words[-2000:])
    log_decision(state_dir, {"decision": "accepted", "refs": refs, "upstream_seconds": round(result.seconds, 3)})
    say(f"git-gate: scanned clean and pushed upstream: {', '.join(u.ref for u in updates)}")
    return 0


def main() -> int:
    state_dir = os.environ.get("GIT_GATE_STATE", "/state/git-gate")
    git_dir = os.environ.get("GIT_DIR", ".")
    try:
        updates = parse_updates(sys.stdin.read())
        if not updates:
            return 0
        return decide(updates, state_dir, git_dir)
    except (GateError, OSError, subprocess.SubprocessError, ValueError) as e:
        # Whatever went wrong, the push stops here (fail closed), in one line the agent can read.
        problem = str(e) if isinstance(e, GateError) else f"the gate failed ({type(e).__name__}: {e})"
        say(f"git-gate: push rejected: {problem}")
        try:
            log_decision(state_dir, {"decision": "rejected", "reason": "error", "error": problem})
        except OSError:
            pass
        return 1


if __name__ == "__main__":
    sys.exit(main())
