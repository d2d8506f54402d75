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
