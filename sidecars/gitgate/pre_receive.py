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

sys.path.insert(0, os.path.dirname(os.path.realpath(__file__)))

from push_policy import Finding, GateError, RefUpdate, findings_from_report, load_config, parse_updates, push_range, refusal, rejection_lines  # noqa: E402
from upstream_git import git_env, push_argv, run_git, scrub  # noqa: E402

GITLEAKS = os.environ.get("GIT_GATE_GITLEAKS", "gitleaks")
GITLEAKS_CONFIG = os.environ.get("GIT_GATE_GITLEAKS_CONFIG", "/opt/gitleaks/gitleaks.toml")
SCAN_TIMEOUT = 300
PUSH_TIMEOUT = 300


def say(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def log_decision(state_dir: str, record: dict) -> None:
    record = {"time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), **record}
    data = (json.dumps(record, sort_keys=True) + "\n").encode()
    # One write on an O_APPEND descriptor: concurrent writers never interleave within a line.
    fd = os.open(os.path.join(state_dir, "pushes.jsonl"), os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    try:
        os.write(fd, data)
    finally:
        os.close(fd)


_SCANNED_RE = re.compile(r"(\d+) commits scanned")


def adds_lines(git_dir: str, log_opts: list[str]) -> bool:
    """Whether the range adds any line (gitleaks counts only commits with additions as scanned)."""
    proc = subprocess.run(["git", "--git-dir", git_dir, "log", "-p", "-U0", "--format=", *log_opts],
                          capture_output=True, timeout=SCAN_TIMEOUT)
    if proc.returncode != 0:
        raise GateError(f"cannot list the pushed commits: {proc.stderr.decode(errors='replace').strip()[:300]}")
    return any(line.startswith(b"+") and not line.startswith(b"+++ ") for line in proc.stdout.splitlines())


def scan(git_dir: str, update: RefUpdate) -> list[Finding]:
    """gitleaks over the commits this update brings, secrets redacted in whatever it reports."""
    log_opts = push_range(update)
    if not log_opts:
        return []
    git_dir = os.path.abspath(git_dir)  # gitleaks runs in another folder
    with tempfile.TemporaryDirectory(prefix="gitleaks-") as work:
        report = os.path.join(work, "report.json")
        argv = [
            GITLEAKS, "git", "--no-banner", "--no-color", "--log-level", "info", "--redact",
            "--config", GITLEAKS_CONFIG, "--report-format", "json", "--report-path", report,
            # The pushed content must not switch its own scan off: no inline `gitleaks:allow`, and
            # no .gitleaksignore (looked up in the working folder, an empty one here).
            "--ignore-gitleaks-allow", "--gitleaks-ignore-path", work,
            "--exit-code", "3", "--log-opts=" + " ".join(log_opts), git_dir,
        ]
        env = {**os.environ, "GIT_DIR": git_dir}
        try:
            proc = subprocess.run(argv, cwd=work, env=env, capture_output=True, text=True, timeout=SCAN_TIMEOUT)
        except subprocess.TimeoutExpired:
            raise GateError(f"gitleaks did not finish scanning {update.ref} within {SCAN_TIMEOUT} s") from None
        except OSError as e:
            raise GateError(f"cannot run gitleaks ({e.strerror or e})") from None
        if proc.returncode not in (0, 3):
            last = (proc.stderr.strip().splitlines() or ["no output"])[-1]
            raise GateError(f"gitleaks failed on {update.ref} (exit {proc.returncode}): {last[:300]}")
        with open(report, encoding="utf-8") as f:
            found = findings_from_report(f.read())
        if proc.returncode == 3 and not found:
            raise GateError(f"gitleaks reported leaks in {update.ref} but its report lists none")
        # gitleaks says "0 commits scanned" and exits 0 when its git log fails: fail closed.
        scanned = _SCANNED_RE.search(proc.stderr)
        if (scanned is None or scanned[1] == "0") and adds_lines(git_dir, log_opts):
            raise GateError(f"gitleaks scanned no commit of {update.ref} although it adds lines; nothing was sent upstream")
        return found


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
        lines = [f"git-gate: upstream refused the push; nothing changed here or upstream:"]
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
    except GateError as e:
        say(f"git-gate: push rejected: {e}")
        try:
            log_decision(state_dir, {"decision": "rejected", "reason": "error", "error": str(e)})
        except OSError:
            pass
        return 1


if __name__ == "__main__":
    sys.exit(main())
