"""Least privilege in the bundle: bottle_init gives each daemon only the variables its
daemons.json entry names (init run for real, daemons that dump the environment they got)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from tests.sidecars.test_bottle_init import Bundle
from tests.support.waiting import wait_for

DUMP = """
import json, os, sys, time
with open(sys.argv[1] + ".tmp", "w") as f:
    json.dump(dict(os.environ), f)
os.replace(sys.argv[1] + ".tmp", sys.argv[1])
while True:
    time.sleep(1)
"""


def test_each_daemon_gets_only_its_own_secrets_and_declared_variables(tmp_path: Path) -> None:
    dump = tmp_path / "dump.py"
    dump.write_text(DUMP)
    out = tmp_path / "env"
    out.mkdir()
    daemons = {
        "egress": {
            "argv": [sys.executable, str(dump), str(out / "egress.json")],
            "secrets_from": "BOTTLE_EGRESS_SECRETS",
            "env": {"FIXED": "1"},
        },
        "git-gate": {
            "argv": [sys.executable, str(dump), str(out / "git-gate.json")],
            "secrets_from": "BOTTLE_GIT_GATE_SECRETS",
            "pass_env": ["BOTTLE_GIT_UPSTREAM"],
        },
        "supervise": {"argv": [sys.executable, str(dump), str(out / "supervise.json")]},
    }
    bundle = Bundle(tmp_path, daemons, "egress,git-gate,supervise")
    bundle.env.update(
        {
            "API_TOKEN": "egress-secret",
            "OTHER_TOKEN": "egress-secret-2",
            "GIT_TOKEN": "gate-secret",
            "BOTTLE_EGRESS_SECRETS": "API_TOKEN, OTHER_TOKEN",
            "BOTTLE_GIT_GATE_SECRETS": "GIT_TOKEN",
            "BOTTLE_GIT_UPSTREAM": "https://git.example/repo.git",
            "BOTTLE_SLUG": "t-000001",
            "UNRELATED": "x",
        }
    )
    bundle.start()
    try:
        envs = {}
        for name in daemons:
            path = out / f"{name}.json"
            wait_for(path.exists, timeout=10, what=f"{name} to dump its environment")
            envs[name] = json.loads(path.read_text())
    finally:
        bundle.stop()
    egress, gate, supervise = envs["egress"], envs["git-gate"], envs["supervise"]
    assert (
        egress["API_TOKEN"] == "egress-secret" and egress["OTHER_TOKEN"] == "egress-secret-2" and egress["FIXED"] == "1"
    )
    assert "GIT_TOKEN" not in egress and "BOTTLE_GIT_UPSTREAM" not in egress
    assert gate["GIT_TOKEN"] == "gate-secret" and gate["BOTTLE_GIT_UPSTREAM"] == "https://git.example/repo.git"
    assert "API_TOKEN" not in gate and "OTHER_TOKEN" not in gate
    secrets = {"egress-secret", "egress-secret-2", "gate-secret"}
    assert not secrets & set(supervise.values()), "supervise holds a secret"
    for env in envs.values():
        assert "UNRELATED" not in env and env.get("BOTTLE_SLUG") == "t-000001"
        assert "BOTTLE_INIT_DAEMONS_FILE" not in env


def test_bad_pass_env_or_secrets_from_is_one_line(tmp_path: Path) -> None:
    for spec, needle in (
        ({"pass_env": "PATH"}, "pass_env must be a list"),
        ({"secrets_from": ""}, "secrets_from must name"),
    ):
        folder = tmp_path / needle.split()[0]
        folder.mkdir()
        bundle = Bundle(folder, {"x": {"mode": "sleep", **spec}}, "x").start()
        try:
            assert bundle.proc.wait(timeout=10) == 2
        finally:
            bundle.stop()
        assert needle in bundle.stderr and bundle.stderr.count("\n") == 1


def test_secrets_come_from_files_when_the_service_environment_has_none(tmp_path: Path) -> None:
    """A swarm bundle: the credentials are Docker secrets (files), none in the service's
    environment; init reads them and each daemon still gets only its own. Init starts no daemon
    before the host's seed mark exists."""
    dump = tmp_path / "dump.py"
    dump.write_text(DUMP)
    out = tmp_path / "env"
    out.mkdir()
    secrets = tmp_path / "secrets"
    secrets.mkdir()
    (secrets / "API_TOKEN").write_text("egress-secret-from-file\n")
    (secrets / "GIT_TOKEN").write_text("gate-secret-from-file")
    mark = tmp_path / "state" / ".seeded"
    mark.parent.mkdir()
    daemons = {
        "egress": {
            "argv": [sys.executable, str(dump), str(out / "egress.json")],
            "secrets_from": "BOTTLE_EGRESS_SECRETS",
        },
        "supervise": {"argv": [sys.executable, str(dump), str(out / "supervise.json")]},
    }
    bundle = Bundle(tmp_path, daemons, "egress,supervise")
    bundle.env.update(
        {
            "BOTTLE_EGRESS_SECRETS": "API_TOKEN,MISSING_TOKEN",
            "BOTTLE_SECRETS_DIR": str(secrets),
            "BOTTLE_SEED_MARK": str(mark),
        }
    )
    bundle.start()
    try:
        wait_for(lambda: "waiting for the host to seed" in bundle.stderr, timeout=10, what="init to wait for the seed")
        assert not (out / "egress.json").exists(), "a daemon started before the state was seeded"
        mark.write_text("{}")
        for name in daemons:
            wait_for((out / f"{name}.json").exists, timeout=10, what=f"{name} to dump its environment")
        egress = json.loads((out / "egress.json").read_text())
        supervise = json.loads((out / "supervise.json").read_text())
    finally:
        bundle.stop()
    assert egress["API_TOKEN"] == "egress-secret-from-file\n"  # the secret's bytes, as given
    assert "MISSING_TOKEN" not in egress and "GIT_TOKEN" not in egress
    assert not {"egress-secret-from-file\n", "gate-secret-from-file"} & set(supervise.values())


def test_init_stopped_while_waiting_for_the_seed_exits_at_once(tmp_path: Path) -> None:
    bundle = Bundle(tmp_path, {"x": {"mode": "sleep"}}, "x")
    bundle.env["BOTTLE_SEED_MARK"] = str(tmp_path / "never")
    bundle.start()
    try:
        wait_for(lambda: "waiting for the host" in bundle.stderr, timeout=10, what="init to wait")
        assert bundle.proc is not None
        bundle.proc.terminate()
        assert bundle.proc.wait(timeout=5) == 0
    finally:
        bundle.stop()
    assert "stopped before the state was seeded" in bundle.stderr
