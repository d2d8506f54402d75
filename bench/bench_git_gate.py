"""What the git gate adds: fetch and push through it against the same git operations straight to the
upstream, side by side, inside one sidecars-image container (the real gitleaks, the real gate on
loopback, a local upstream, no network); then the gate's scan alone (object_scan.scan_push, one
gitleaks run with the gate's rules) for pushes of 1, 100 and 10,000 new objects and of one 50 MB
binary. Prints medians and extremes in ms; asserts nothing."""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROUNDS = 7
REPO_ROOT = Path(__file__).resolve().parents[1]


def outside() -> None:
    sys.path.insert(0, str(REPO_ROOT))
    from bottle_tui.backends.docker.images import image_refs

    image = image_refs()["sidecars"]
    if subprocess.run(["docker", "image", "inspect", image], capture_output=True).returncode != 0:
        raise SystemExit(f"bench_git_gate: no image {image}; run `bottle-tui images build` first")
    subprocess.run(
        [
            "docker",
            "run",
            "--rm",
            "--network",
            "none",
            "--entrypoint",
            "python3",
            "-e",
            "PYTHONPATH=/opt/bottle/common:/opt/bottle/gitgate",
            "-v",
            f"{REPO_ROOT / 'sidecars' / 'gitgate'}:/opt/bottle/gitgate:ro",
            "-v",
            f"{Path(__file__).parent}:/bench:ro",
            image,
            "/bench/bench_git_gate.py",
            "--inside",
        ],
        check=True,
    )


def inside() -> None:
    tmp = Path(tempfile.mkdtemp())
    env = {
        **os.environ,
        "HOME": str(tmp),
        "GIT_AUTHOR_NAME": "b",
        "GIT_AUTHOR_EMAIL": "b@b",
        "GIT_COMMITTER_NAME": "b",
        "GIT_COMMITTER_EMAIL": "b@b",
    }

    def git(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
        return subprocess.run(["git", *args], cwd=cwd, env=env, capture_output=True, text=True, check=True)

    upstream, seed, work, state = tmp / "up.git", tmp / "seed", tmp / "work", tmp / "state"
    git("init", "-q", "--bare", "-b", "main", str(upstream))
    git("init", "-q", "-b", "main", str(seed))
    for i in range(300):  # a small project: 300 files
        (seed / f"f{i}.py").write_text(f"x = {i}\n" * 50)
    git("add", ".", cwd=seed)
    git("commit", "-qm", "seed", cwd=seed)
    git("push", "-q", str(upstream), "main", cwd=seed)
    state.mkdir()
    (state / "gate.json").write_text(
        json.dumps(
            {
                "version": 1,
                "upstream": f"file://{upstream}",
                "repo": "up",
                "branch": "main",
                "protected": ["main"],
                "credentials_env": None,
                "port": 8418,
                "listen_alias": "git-gate",
                "refresh_timeout_seconds": 20,
                "first_mirror_timeout_seconds": 600,
            }
        )
    )
    gate = subprocess.Popen(
        ["python3", "/opt/bottle/gitgate/gate.py", str(state)],
        env={**env, "GIT_GATE_LISTEN": "127.0.0.1"},
        stderr=subprocess.DEVNULL,
    )
    while not (state / "ready").exists():
        time.sleep(0.02)
    origin = "http://127.0.0.1:8418/up.git"
    git("clone", "-q", origin, str(work))

    def ms(argv: list[str]) -> float:
        t0 = time.perf_counter()
        subprocess.run(argv, cwd=work, env=env, capture_output=True, check=False)
        return (time.perf_counter() - t0) * 1000

    def commit(branch: str, files: int, size: int) -> None:
        git("checkout", "-q", "-B", branch, "origin/main", cwd=work)
        for i in range(files):
            (work / f"{branch}-{i}.txt").write_text(os.urandom(size // 2).hex() + "\n")
            git("add", ".", cwd=work)
            git("commit", "-qm", f"{branch} {i}", cwd=work)

    rows: list[tuple[str, list[float], list[float]]] = []
    rows.append(
        (
            "fetch, nothing new",
            [ms(["git", "fetch", "-q", "origin"]) for _ in range(ROUNDS)],
            [ms(["git", "fetch", "-q", str(upstream)]) for _ in range(ROUNDS)],
        )
    )
    for label, files, size in (("push, 1 commit of 10 KB", 1, 10_000), ("push, 20 commits of 10 KB", 20, 10_000)):
        gated, direct = [], []
        for r in range(ROUNDS):
            commit(f"g{files}-{r}", files, size)
            gated.append(ms(["git", "push", "-q", "origin", "HEAD"]))
            commit(f"d{files}-{r}", files, size)
            direct.append(ms(["git", "push", "-q", str(upstream), "HEAD"]))
        rows.append((label, gated, direct))
    gate.terminate()
    decisions = [json.loads(line)["decision"] for line in (state / "pushes.jsonl").read_text().splitlines()]
    assert set(decisions) == {"accepted"}, decisions
    print(f"git gate (median / min / max ms, n={ROUNDS}; through the gate vs straight to the upstream)")
    for label, gated, direct in rows:
        g, d = statistics.median(gated), statistics.median(direct)
        print(
            f"  {label:28s} gate {g:7.0f} ({min(gated):.0f}-{max(gated):.0f})   direct {d:6.0f} ({min(direct):.0f}-{max(direct):.0f})   added {g - d:6.0f}"
        )
    scan_times(tmp, env)


def scan_times(tmp: Path, env: dict[str, str]) -> None:
    """The gate's scan of a push, alone: new objects in a repository no ref of which reaches them,
    exactly as pushed objects sit in receive-pack's quarantine."""
    from object_scan import scan_push  # the gate's own module (PYTHONPATH set by outside())

    repo = tmp / "scan"
    repo.mkdir()

    def run(*args: str, data: bytes | None = None) -> bytes:
        return subprocess.run(
            ["git", "-C", str(repo), *args], env=env, input=data, capture_output=True, check=True
        ).stdout

    run("init", "-q", "-b", "main")
    (repo / "README").write_text("base\n")
    run("add", ".")
    run("commit", "-qm", "base")

    def source(i: int) -> bytes:  # ~1 KB of ordinary code
        return b"".join(
            b"def handler_%d_%d(request):\n    return request.value + %d  # offset\n" % (i, j, j) for j in range(16)
        )

    def commit_of(blobs: list[bytes]) -> str:
        folder = tmp / f"blobs-{len(blobs)}"
        folder.mkdir()
        paths = []
        for i, data in enumerate(blobs):
            (folder / f"f{i}").write_bytes(data)
            paths.append(str(folder / f"f{i}"))
        oids = run("hash-object", "-w", "--stdin-paths", data="\n".join(paths).encode()).decode().split()
        tree = (
            run("mktree", data="".join(f"100644 blob {o}\tfile{i}.py\n" for i, o in enumerate(oids)).encode())
            .decode()
            .strip()
        )
        return run("commit-tree", "-p", "HEAD", "-m", f"{len(blobs)} files", tree).decode().strip()

    cases = [
        ("1 object (a blob)", run("hash-object", "-w", "--stdin", data=source(0)).decode().strip(), ROUNDS),
        ("100 objects (98 files of 1 KB)", commit_of([source(i) for i in range(98)]), ROUNDS),
        ("10,000 objects (9,998 files of 1 KB)", commit_of([source(i) for i in range(9998)]), 3),
        ("3 objects (one 50 MB binary)", commit_of([os.urandom(50 << 20)]), 1),
    ]
    print("git gate scan alone (scan_push: rev-list, cat-file, one gitleaks dir; median / min / max ms)")
    for label, tip, rounds in cases:
        times, result = [], None
        for _ in range(rounds):
            t0 = time.perf_counter()
            result = scan_push(str(repo / ".git"), [tip], "gitleaks", "/opt/gitleaks/gate.toml")
            times.append((time.perf_counter() - t0) * 1000)
        assert result is not None and not result.findings and result.bytes_scanned == result.bytes_written
        print(
            f"  {label:38s} {statistics.median(times):8.0f} ({min(times):.0f}-{max(times):.0f})   n={rounds}, "
            f"{len(result.objects)} objects, {result.files} files, {result.bytes_scanned / 1e6:.1f} MB read by gitleaks"
        )


if __name__ == "__main__":
    inside() if sys.argv[1:] == ["--inside"] else outside()
