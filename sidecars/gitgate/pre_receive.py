#!/usr/bin/env python3
"""The gate's pre-receive hook: refuse foreign refs and protected names, scan every object the push
brings with gitleaks (object_scan.py), forward a clean push upstream, and accept it only when
upstream accepted it.

Everything it prints on stderr reaches the agent's git as ``remote: ...``. Every decision is one
bounded JSON line in the state folder's pushes.jsonl. It runs inside receive-pack's quarantine:
the pushed objects are readable (git and gitleaks inherit the environment) but no ref has moved yet.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

from object_scan import scan_push
from push_policy import SHOWN, GateError, RefUpdate, load_config, parse_updates, ref_list, refusal, rejection_lines
from review import deliver_decisions, queue_full
from upstream_git import git_env, push_argv, run_git, scrub

# Imported through the git gate's pythonpath (daemons.json; git passes the environment to hooks).
from bottle_contract import layout
from bottle_contract.files import append_jsonl

GITLEAKS = os.environ.get("GIT_GATE_GITLEAKS", "gitleaks")
# The gate's own rules (gate_rules.py, written at image build): gitleaks' without place-based allowlists.
GITLEAKS_CONFIG = os.environ.get("GIT_GATE_GITLEAKS_CONFIG", "/opt/gitleaks/gate.toml")
PUSH_TIMEOUT = 300
MAX_RECORD = 16 << 10  # bytes of one pushes.jsonl line, whatever the push


def say(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def refs_summary(updates: list[RefUpdate]) -> dict:
    """The refs of a push for the log: each one up to SHOWN, then counts (3,000 refs stay small)."""
    kinds: dict[str, int] = {}
    for u in updates:
        kinds[u.kind] = kinds.get(u.kind, 0) + 1
    shown = [{"ref": u.ref[:300], "kind": u.kind, "old": u.old, "new": u.new} for u in updates[:SHOWN]]
    return {"refs": shown, "ref_count": len(updates), "ref_kinds": kinds}


def bounded(record: dict) -> dict:
    """``record`` cut to MAX_RECORD bytes of JSON: long lists keep their head, then the rest goes."""
    if len(json.dumps(record)) <= MAX_RECORD:
        return record
    record = {
        k: (v[:SHOWN] if isinstance(v, list) else v[:2000] if isinstance(v, str) else v) for k, v in record.items()
    }
    if len(json.dumps(record)) > MAX_RECORD:
        keep = ("time", "decision", "reason", "ref_count", "ref_kinds", "findings_count", "objects")
        record = {k: v for k, v in record.items() if k in keep}
    record["truncated"] = True
    return record


def log_decision(state_dir: str, record: dict) -> None:
    record = bounded({"time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), **record})
    cap = layout.PUSH_LOG_CAP
    append_jsonl(os.path.join(state_dir, layout.PUSH_LOG), record, max_bytes=cap.max_bytes, keep=cap.keep)


def decide(updates: list[RefUpdate], state_dir: str, git_dir: str) -> int:
    cfg = load_config(os.path.join(state_dir, "gate.json"))
    refs = refs_summary(updates)

    def reject(reason: str, lines: list[str], **extra) -> int:
        for line in lines:
            say(line)
        log_decision(state_dir, {"decision": "rejected", "reason": reason, **refs, **extra})
        return 1

    if cfg.review:
        # The operator's decisions on earlier held pushes reach the agent here, once each.
        for line in deliver_decisions(cfg, state_dir):
            say(line)
    refused = [r for r in (refusal(u, cfg.protected, cfg.review) for u in updates) if r]
    full = queue_full(cfg, state_dir) if cfg.review and not refused else None
    if full:
        return reject("refused", [f"git-gate: push rejected: {full}"])
    if refused:
        lines = [f"git-gate: push rejected: {r}" for r in refused[:SHOWN]]
        if len(refused) > SHOWN:
            lines.append(f"git-gate: push rejected: ... and {len(refused) - SHOWN:,} more refs like these")
        return reject("refused", lines, details=refused[:SHOWN], refused_count=len(refused))
    tips = list(dict.fromkeys(u.new for u in updates if not u.deleted))
    result = scan_push(os.path.abspath(git_dir), tips, GITLEAKS, GITLEAKS_CONFIG)
    scanned = {
        "objects": len(result.objects),
        "scanned_bytes": result.bytes_scanned,
        "scan_seconds": round(result.seconds, 3),
    }
    if result.findings:
        pushed = [u.ref for u in updates if not u.deleted]
        return reject(
            "secrets",
            rejection_lines(pushed, result.findings),
            **scanned,
            findings=[f.__dict__ for f in result.findings[:SHOWN]],
            findings_count=len(result.findings),
        )
    if cfg.review:
        # Clean: the mirror takes it, and post-receive queues it for the operator; nothing leaves.
        log_decision(state_dir, {"decision": "accepted", "held": True, **refs, **scanned})
        say(f"git-gate: scanned clean: {ref_list([u.ref for u in updates])} ({len(result.objects)} new objects)")
        return 0
    result_up = run_git(push_argv(cfg, updates), git_env(cfg, state_dir), PUSH_TIMEOUT)
    words = scrub(result_up.output, cfg)
    if not result_up.ok:
        lines = ["git-gate: upstream refused the push, so the gate did not take it either:"]
        lines += [f"git-gate:   {line}" for line in words.splitlines()[:SHOWN] if line.strip()] or [
            "git-gate:   (no message)"
        ]
        lines.append("git-gate: fetch, integrate upstream's changes, and push again")
        return reject("upstream-refused", lines, upstream=words[-2000:], **scanned)
    log_decision(
        state_dir, {"decision": "accepted", **refs, **scanned, "upstream_seconds": round(result_up.seconds, 3)}
    )
    say(
        f"git-gate: scanned clean and pushed upstream: {ref_list([u.ref for u in updates])} ({len(result.objects)} new objects)"
    )
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
            log_decision(state_dir, {"decision": "rejected", "reason": "error", "error": problem[:2000]})
        except OSError:
            pass
        return 1


if __name__ == "__main__":
    sys.exit(main())
