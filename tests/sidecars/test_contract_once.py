"""The rules the host and the sidecars share are written once, in bottle_contract: this test walks
every module of both sides and fails on a second copy of any of them.

A copy rewritten rather than pasted is what drifts unseen (a clone checker does not see it), and
across this boundary a drift is a sandbox escape. So the test looks for what a copy would have to
contain, whatever it is named: the contract's regular expressions and key lists as literals, its
port numbers, the primitives of an atomic write, a lock or a log append, a wildcard-host check,
and a definition under one of the contract's names.
"""

from __future__ import annotations

import ast
import json
import re
from pathlib import Path

import pytest

from bottle_contract import hosts, layout, policy, ports, proposal

ROOT = Path(__file__).resolve().parents[2]
CONTRACT = ROOT / "sidecars" / "common" / "bottle_contract"
SOURCES = sorted(
    p for base in (ROOT / "bottle_tui", ROOT / "sidecars") for p in base.rglob("*.py") if CONTRACT not in p.parents
)

# What only the contract may define, by name.
CONTRACT_NAMES = {
    "atomic_write",
    "append_jsonl",
    "append_line",
    "rotate",
    "locked",
    "normalize_host",
    "host_matches",
    "host_within",
    "host_problem",
    "new_id",
    "now_iso",
    "is_id",
    "well_formed",
    "new_proposal",
    "narrower_problem",
    "yaml_text",
}
REGEXES = {
    r.pattern for r in (proposal.ID_RE, policy.RULE_ID_RE, policy.ENV_NAME_RE, policy.HEADER_NAME_RE, hosts._LABEL_RE)
}
KEY_LISTS = [
    set(policy.ROUTE_KEYS[:4]),
    set(policy.DLP_KEYS),
    set(policy.AUTH_KEYS),
    set(policy.TOP_KEYS),
    set(proposal.STATUSES),
    set(proposal.KINDS[:2]),
    set(policy.HTTP_METHODS[:5]),
]
PORTS = {v for k, v in vars(ports).items() if k.isupper() and isinstance(v, int)}
# Calls that are the body of an atomic write, a lock or a JSONL append.
PRIMITIVES = {("os", "replace"), ("os", "rename"), ("fcntl", "flock"), ("tempfile", "mkstemp")}
# The uses of those calls that are not a copy of the contract's, each with why.
NOT_COPIES = {
    (
        "bottle_tui/backends/smolvm/vm_lifecycle.py",
        "os.replace",
    ): "moves a built pack into place (a rename, no data written)",
    ("bottle_tui/runner.py", "tempfile.mkstemp"): "the file an editor opens, removed afterwards (no replace)",
    (
        "bottle_tui/backends/docker/workspace.py",
        "os.replace",
    ): "moves a finished work archive folder into place (a rename of a folder, no data written)",
    (
        "bottle_tui/backends/docker/snapshot.py",
        "os.replace",
    ): "moves a finished snapshot folder into place (a rename of a folder, no data written)",
    ("sidecars/init/bottle_init.py", "os.replace"): "takes a restart request aside before reading it (a rename)",
    (
        "bottle_tui/backends/docker/pool.py",
        "os.rename",
    ): "claims a warm bottle, or takes one aside, by renaming its folder (the rename is the claim; no data written)",
}


def findings(path: Path, root: Path = ROOT) -> list[str]:
    """Every place in ``path`` that writes one of the contract's rules again."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    for node in ast.walk(tree):
        for child in ast.iter_child_nodes(node):
            child.parent = node  # type: ignore[attr-defined]
    rel = path.relative_to(root)
    out = []
    for node in ast.walk(tree):
        where = f"{rel}:{getattr(node, 'lineno', '?')}"
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)) and node.name in CONTRACT_NAMES:
            out.append(f"{where}: defines {node.name}, which is bottle_contract's")
        elif isinstance(node, ast.Constant) and isinstance(node.value, str):
            if node.value in REGEXES:
                out.append(f"{where}: the contract's regex {node.value!r} written again")
            call = getattr(node, "parent", None)
            if (
                node.value == "*."
                and isinstance(call, ast.Call)
                and isinstance(call.func, ast.Attribute)
                and call.func.attr in ("startswith", "endswith")
            ):
                out.append(f"{where}: a wildcard-host check outside bottle_contract.hosts")
        elif isinstance(node, ast.Constant) and type(node.value) is int and node.value in PORTS:
            out.append(f"{where}: port {node.value} written outside bottle_contract.ports")
        elif isinstance(node, (ast.Tuple, ast.List, ast.Set)):
            strings = {e.value for e in node.elts if isinstance(e, ast.Constant) and isinstance(e.value, str)}
            if any(len(strings & keys) >= min(3, len(keys)) for keys in KEY_LISTS):
                out.append(f"{where}: a list of the contract's keys {sorted(strings)} written again")
        elif isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name):
            if (node.value.id, node.attr) in PRIMITIVES and (
                str(rel),
                f"{node.value.id}.{node.attr}",
            ) not in NOT_COPIES:
                out.append(f"{where}: {node.value.id}.{node.attr} outside bottle_contract.files")
            if node.value.id == "os" and node.attr == "O_APPEND":
                out.append(f"{where}: an O_APPEND log write outside bottle_contract.files")
    return out


def test_the_walk_sees_both_sides() -> None:
    names = {p.relative_to(ROOT).parts[0] for p in SOURCES}
    assert names == {"bottle_tui", "sidecars"} and len(SOURCES) > 40


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: str(p.relative_to(ROOT)))
def test_no_rule_of_the_contract_is_written_twice(path: Path) -> None:
    assert findings(path) == []


def test_daemons_json_names_ports_through_the_contract() -> None:
    spec = json.loads((ROOT / "sidecars" / "daemons.json").read_text())
    numbers = {int(n) for d in spec.values() for a in d["argv"] for n in re.findall(r"\b\d{4,5}\b", a)}
    assert not numbers & PORTS, "daemons.json writes a port number: use {port:NAME}"
    assert all(d["pythonpath"][0] == "/opt/bottle/common" for d in spec.values())


def test_the_detector_finds_each_kind_of_copy(tmp_path: Path) -> None:
    """The checks above must be able to fail: each kind of copy, written into a scratch module."""
    copy = tmp_path / "copy.py"
    copy.write_text(
        "import os, fcntl\n"
        "ID = r'^[a-z0-9][a-z0-9-]{0,63}$'\n"
        "KEYS = ('body', 'disabled_rules', 'max_body_bytes')\n"
        f"PORT = {ports.EGRESS}\n"
        "def atomic_write(p, d):\n    os.replace(p, d)\n"
        "def lock(fd):\n    fcntl.flock(fd, fcntl.LOCK_EX)\n"
        "def log(p):\n    return os.open(p, os.O_APPEND)\n"
        "def wild(h, p):\n    return p.startswith('*.')\n"
    )
    found = "\n".join(findings(copy, tmp_path))
    for needle in (
        "regex",
        "keys",
        "port",
        "defines atomic_write",
        "os.replace",
        "fcntl.flock",
        "O_APPEND",
        "wildcard",
    ):
        assert needle in found, (needle, found)
    assert layout.QUEUE_LOCK and layout.ROUTES
