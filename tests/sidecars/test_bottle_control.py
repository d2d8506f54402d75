"""The bundle's control command (sidecars/control/bottle_control.py), run as the host runs it
through `docker exec`: a real process, its stdin and stdout, a real state folder."""

from __future__ import annotations

import io
import json
import subprocess
import sys
import tarfile
from pathlib import Path

CONTROL = Path(__file__).resolve().parents[2] / "sidecars" / "control" / "bottle_control.py"
COMMON = CONTROL.parents[1] / "common"


def control(root: Path, *args: str, stdin: bytes = b"") -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        [sys.executable, str(CONTROL), "--root", str(root), *args],
        input=stdin,
        capture_output=True,
        env={"PYTHONPATH": str(COMMON), "PATH": "/usr/bin:/bin"},
        timeout=30,
    )


def tar_of(files: dict[str, tuple[bytes, int]]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for name, (data, mode) in files.items():
            info = tarfile.TarInfo(name)
            info.size, info.mode = len(data), mode
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def test_seed_writes_the_sidecar_folders_then_the_mark_and_only_once(tmp_path: Path) -> None:
    seed = tar_of({"egress/routes.yaml": (b"version: 1\n", 0o600), "egress/mitmproxy-ca.pem": (b"KEY", 0o600)})
    done = control(tmp_path, "seed", stdin=seed)
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "egress" / "routes.yaml").read_bytes() == b"version: 1\n"
    assert (tmp_path / "egress" / "mitmproxy-ca.pem").stat().st_mode & 0o777 == 0o600
    assert (tmp_path / ".seeded").exists() and (tmp_path / "supervise").is_dir()
    (tmp_path / "egress" / "routes.yaml").write_text("changed by a decision\n")
    again = control(tmp_path, "seed", stdin=seed)
    assert again.returncode == 3 and b"seeded already" in again.stderr
    assert (tmp_path / "egress" / "routes.yaml").read_text() == "changed by a decision\n"


def test_seed_refuses_members_outside_the_sidecar_folders(tmp_path: Path) -> None:
    for name in ("../escape", "/abs/path", "other/file", "egress/../../x"):
        root = tmp_path / str(abs(hash(name)))
        root.mkdir()
        done = control(root, "seed", stdin=tar_of({name: (b"x", 0o644)}))
        assert done.returncode == 1 and b"refusing seed member" in done.stderr, name
        assert not (root / ".seeded").exists()
    assert not (tmp_path.parent / "escape").exists()


def test_ready_waits_for_the_daemons_ready_files(tmp_path: Path) -> None:
    (tmp_path / "egress").mkdir()
    (tmp_path / "egress" / "ready").write_text(json.dumps({"routes_error": None}))
    missing = control(tmp_path, "ready", "egress,supervise", "--timeout", "0.2")
    assert missing.returncode == 1 and json.loads(missing.stdout) == {"missing": ["supervise"]}
    done = control(tmp_path, "ready", "egress", "--timeout", "1")
    assert done.returncode == 0 and json.loads(done.stdout) == {"egress": {"routes_error": None}}
    assert control(tmp_path, "ready", "nosuch").returncode == 2


def test_read_prints_one_file_of_a_sidecar_folder(tmp_path: Path) -> None:
    (tmp_path / "egress").mkdir()
    (tmp_path / "egress" / "requests.jsonl").write_text('{"a": 1}\n')
    assert control(tmp_path, "read", "egress", "requests.jsonl").stdout == b'{"a": 1}\n'
    assert control(tmp_path, "read", "egress", "nothing").returncode == 4
    assert control(tmp_path, "read", "..", "etc").returncode == 2


def test_write_replaces_only_the_files_the_host_writes(tmp_path: Path) -> None:
    done = control(tmp_path, "write", "egress", "upstream-ca.pem", stdin=b"PEM\n")
    assert done.returncode == 0, done.stderr
    written = tmp_path / "egress" / "upstream-ca.pem"
    assert written.read_bytes() == b"PEM\n" and written.stat().st_mode & 0o777 == 0o644
    for folder, name in (("egress", "routes.yaml"), ("supervise", "queue"), ("..", "x"), ("egress", "../x")):
        refused = control(tmp_path, "write", folder, name, stdin=b"x")
        assert refused.returncode == 2 and b"not a file the host writes" in refused.stderr, (folder, name)
    assert not (tmp_path / "egress" / "routes.yaml").exists()


ROUTES = "version: 1\nbottle: b\ndlp: {body: true, disabled_rules: [], max_body_bytes: 8388608}\nroutes: []\n"


def queued(root: Path) -> dict:  # type: ignore[type-arg]
    sys.path.insert(0, str(COMMON))
    from bottle_contract import proposal as contract

    data = contract.new_proposal("b-000001", "egress-route", {"host": "x.example.com"}, "why")
    (root / "supervise" / "queue").mkdir(parents=True, exist_ok=True)
    contract.Queue(root / "supervise" / "queue").write(data)
    return data


def test_queue_and_commit_through_the_control_command(tmp_path: Path) -> None:
    (tmp_path / "egress").mkdir()
    (tmp_path / "egress" / "routes.yaml").write_text(ROUTES)
    data = queued(tmp_path)
    listed = [json.loads(line) for line in control(tmp_path, "queue").stdout.splitlines()]
    assert [p["id"] for p in listed] == [data["id"]]
    decided = {**data, "status": "rejected", "decision": {"by": "op"}}
    request = {"expect_policy": ROUTES, "policy": None, "pending": data["id"], "proposal": decided}
    assert control(tmp_path, "commit", stdin=json.dumps(request).encode()).returncode == 0
    again = control(tmp_path, "commit", stdin=json.dumps(request).encode())
    assert again.returncode == 5 and json.loads(again.stdout)["current"]["status"] == "rejected"
    stale = {"expect_policy": "old", "policy": ROUTES.replace("b\n", "c\n", 1), "pending": None, "proposal": None}
    assert control(tmp_path, "commit", stdin=json.dumps(stale).encode()).returncode == 5
    bad = {"expect_policy": ROUTES, "policy": "version: 1\nroutes: nope\n", "pending": None, "proposal": None}
    refused = control(tmp_path, "commit", stdin=json.dumps(bad).encode())
    assert refused.returncode == 2 and (tmp_path / "egress" / "routes.yaml").read_text() == ROUTES
    assert control(tmp_path, "commit", stdin=b'{"policy": 1}').returncode == 2


def test_watch_streams_each_proposal_and_the_status_as_they_change(tmp_path: Path) -> None:
    (tmp_path / "status").mkdir()
    proc = subprocess.Popen(
        [sys.executable, str(CONTROL), "--root", str(tmp_path), "watch", "--interval", "0.02"],
        stdout=subprocess.PIPE,
        env={"PYTHONPATH": str(COMMON), "PATH": "/usr/bin:/bin"},
        text=True,
    )
    assert proc.stdout is not None
    try:
        assert json.loads(proc.stdout.readline()) == {"synced": True}
        data = queued(tmp_path)
        assert json.loads(proc.stdout.readline())["proposal"]["id"] == data["id"]
        assert json.loads(proc.stdout.readline()) == {"synced": True}
        (tmp_path / "status" / "status.json").write_text('{"state": "working"}')
        assert json.loads(proc.stdout.readline()) == {"status": {"state": "working"}}
    finally:
        proc.kill()
        proc.wait()


def test_serve_answers_a_line_per_request_write_included(tmp_path: Path) -> None:
    (tmp_path / "egress").mkdir()
    (tmp_path / "egress" / "routes.yaml").write_text(ROUTES)
    requests = [
        {"op": "write", "folder": "egress", "name": "upstream-ca.pem", "text": "PEM\n"},
        {"op": "read", "folder": "egress", "name": "upstream-ca.pem"},
        {"op": "write", "folder": "egress", "name": "routes.yaml", "text": "x"},
        {"op": "write", "folder": "egress", "name": "upstream-ca.pem", "text": 1},
        {"op": "nothing"},
    ]
    done = control(tmp_path, "serve", stdin=b"".join(json.dumps(r).encode() + b"\n" for r in requests))
    answers = [json.loads(line) for line in done.stdout.splitlines()]
    assert [a["code"] for a in answers] == [0, 0, 2, 2, 2]
    assert answers[1]["text"] == "PEM\n" and (tmp_path / "egress" / "routes.yaml").read_text() == ROUTES
