"""Nothing is lost at stop, on the real engine: the agent's home is a volume of the bottle's own;
stop saves what its checkout holds that nothing else does in archive/<slug>/work/ (a patch and a
bundle that rebuild the work on a fresh clone of the upstream; a tarball without git), `stop
--keep` + `resume` bring back the same checkout and conversation, and cleanup archives a stray
volume before it removes it. Three bring-ups in all (a git bottle, a plain one and its resume)."""

from __future__ import annotations

import json
import tarfile
import uuid
from pathlib import Path

import pytest

from tests.integration.test_git_gate import agent_sh, git_home
from tests.support.bottles import (
    ANTHROPIC,
    GIT_HOST,
    GIT_SECRET,
    TEST_LABEL,
    Bottle,
    cli,
    connect_fake_internet,
    sh,
    start_bottle,
    stop_bottle,
    write_home,
)

pytestmark = pytest.mark.integration

AGENT_IMAGE = "bottle-tui/agent:latest"


def volume(slug: str) -> str:
    return f"bottle-tui-work-{slug}"


def volume_exists(slug: str) -> bool:
    return sh("docker", "volume", "inspect", volume(slug), check=False).returncode == 0


def archive(home: Path, slug: str) -> Path:
    return home / "archive" / slug / "work"


@pytest.fixture
def volumes_removed():
    """Volumes a test made (by slug) go at its end, whatever happened."""
    made: list[str] = []
    yield made
    for slug in made:
        sh("docker", "volume", "rm", "-f", volume(slug), check=False)


# --- a bottle with git: the patch and the bundle rebuild the work on a fresh clone ------------------

WORK_SCRIPT = r"""
set -e
git config --global user.name agent && git config --global user.email agent@bottle.test
git pull -q origin main
git checkout -q -b pushed && echo pushed > pushed.txt && git add pushed.txt && git commit -qm 'pushed: in the gate'
git push -q origin pushed
git checkout -q -b feature && echo 'not pushed' > feature.txt && git add feature.txt && git commit -qm 'feature: local only'
echo 'stashed change' >> README.md && git stash -q
echo 'uncommitted change' >> README.md
mkdir -p new/deeper && printf 'untracked\n' > new/deeper/notes.txt
head -c 3000 /dev/urandom > new/blob.bin
"""


def test_stop_saves_a_git_checkouts_unsaved_work_and_a_fresh_clone_gets_it_back(
    tmp_path: Path,
    built_images: dict[str, str],
    upstream: str,
    volumes_removed: list[str],
) -> None:
    home = git_home(tmp_path / "home")
    bottle = start_bottle(home, "gitter", env={"BOTTLE_TEST_GIT_TOKEN": GIT_SECRET})
    volumes_removed.append(bottle.slug)
    try:
        assert volume_exists(bottle.slug)
        connect_fake_internet(bottle, upstream, (GIT_HOST,))
        agent_sh(bottle, WORK_SCRIPT, check=True)
        want = {
            name: agent_sh(bottle, f"cat {name} | sha256sum", check=True).stdout
            for name in ("README.md", "feature.txt", "new/deeper/notes.txt", "new/blob.bin")
        }
        stash = agent_sh(bottle, "git stash show -p", check=True).stdout
    finally:
        sh("docker", "network", "disconnect", "-f", bottle.network("egress"), upstream, check=False)
        out = cli(home, "stop", bottle.slug, check=False)
    assert out.returncode == 0, out.stderr
    saved = archive(home, bottle.slug)
    line = next(x for x in out.stderr.splitlines() if x.startswith("checkout: "))
    # README.md and the untracked new/ (two files), the stash, and `feature`'s commit: `pushed`'s is upstream.
    assert line == (
        f"checkout: saved 3 changed or untracked files, 1 stash and 1 commit the gate does not hold in {saved}/ "
        "(uncommitted.patch, refs.bundle)"
    ), out.stderr
    assert not volume_exists(bottle.slug), "a stopped bottle's volume goes once its work is saved"

    # A fresh clone of the upstream, the bundle fetched into it, HEAD's branch checked out, the patch applied.
    sh("docker", "cp", f"{upstream}:/tmp/git/repo.git", str(tmp_path / "upstream.git"))
    fresh = tmp_path / "fresh"
    sh("git", "clone", "-q", str(tmp_path / "upstream.git"), str(fresh))
    git = ["git", "-C", str(fresh)]
    heads = sh(*git, "bundle", "list-heads", str(saved / "refs.bundle")).stdout
    assert "refs/heads/feature" in heads and "refs/stashes/0" in heads and " HEAD" in heads, heads
    sh(
        *git,
        "fetch",
        "-q",
        str(saved / "refs.bundle"),
        "refs/heads/feature:refs/heads/feature",
        "refs/stashes/*:refs/stashes/*",
    )
    sh(*git, "checkout", "-q", "feature")
    sh(*git, "apply", str(saved / "uncommitted.patch"))
    got = {name: sh("sh", "-c", f"cat {name} | sha256sum", cwd=fresh).stdout for name in want}
    assert got == want
    sh(*git, "stash", "store", "-m", "restored", "refs/stashes/0")
    assert sh(*git, "stash", "show", "-p").stdout == stash
    # Nothing kept: resume says so in one line.
    again = cli(home, "resume", bottle.slug, check=False)
    assert again.returncode == 1
    assert again.stderr.strip().splitlines()[-1].startswith(f"bottle-tui: error: no kept bottle '{bottle.slug}'")


# --- a bottle without git: a tarball; --keep and resume bring the same checkout and conversation ----

PLAIN_WORK = r"""
set -e
mkdir -p src/pkg && printf 'print("hi")\n' > src/pkg/main.py && head -c 5000 /dev/urandom > data.bin
ln -s src/pkg/main.py link.py
"""
CLAUDE = f'ANTHROPIC_BASE_URL=https://{ANTHROPIC} ANTHROPIC_API_KEY="$BOTTLE_TEST_TOKEN" timeout 90 claude'


def sums(bottle: Bottle) -> str:
    """Every file of the checkout and of claude's projects, with its checksum (the agent's view)."""
    return bottle.exec(
        "sh", "-c", "cd /home/agent && find work .claude/projects -type f | sort | xargs sha256sum", check=True
    ).stdout


def test_keep_and_resume_bring_back_a_plain_checkout_and_the_conversation(
    tmp_path: Path, built_images: dict[str, str], fake_internet: str, volumes_removed: list[str]
) -> None:
    home = write_home(tmp_path / "home")
    bottle = start_bottle(home)
    volumes_removed.append(bottle.slug)
    try:
        connect_fake_internet(bottle, fake_internet)
        bottle.exec("sh", "-c", PLAIN_WORK, check=True)
        talk = bottle.exec("sh", "-c", f"{CLAUDE} -p 'say hi' 2>&1", timeout=120)
        assert "fake-anthropic says key-ok" in talk.stdout, talk.stdout[-2000:]
        conversations = bottle.exec("sh", "-c", "find /home/agent/.claude/projects -name '*.jsonl'").stdout.split()
        assert len(conversations) == 1, conversations
        before = sums(bottle)
    finally:
        sh("docker", "network", "disconnect", "-f", bottle.network("egress"), fake_internet, check=False)
        out = cli(home, "stop", bottle.slug, "--keep", check=False)
    assert out.returncode == 0, out.stderr
    saved = archive(home, bottle.slug)
    assert (
        f"checkout: saved /home/agent/work (a plain folder) as {saved / 'work.tar.gz'}; kept its volume "
        f"{volume(bottle.slug)} (`bottle-tui resume {bottle.slug}` brings it back)"
    ) in out.stderr.splitlines(), out.stderr
    with tarfile.open(saved / "work.tar.gz") as tar:
        names = set(tar.getnames())
        assert {"work/src/pkg/main.py", "work/data.bin", "work/link.py"} <= names, names
        assert tar.getmember("work/link.py").issym()
        assert tar.extractfile("work/src/pkg/main.py").read() == b'print("hi")\n'  # type: ignore[union-attr]
    assert volume_exists(bottle.slug)

    # A kept bottle is left alone by cleanup.
    tidy = cli(home, "cleanup", "--yes", check=False)
    assert volume_exists(bottle.slug) and (bottle.state / ".preserve").exists(), tidy.stderr

    back = cli(home, "resume", bottle.slug, "--detach", check=False)
    try:
        assert back.returncode == 0, back.stderr
        assert back.stdout.strip().splitlines()[-1] == bottle.slug
        assert sums(bottle) == before
        assert not (bottle.state / ".preserve").exists()
        # claude --continue (what attach runs) finds the conversation and carries it on.
        connect_fake_internet(bottle, fake_internet)
        more = bottle.exec("sh", "-c", f"{CLAUDE} --continue -p 'and again' 2>&1", timeout=120)
        assert "fake-anthropic says key-ok" in more.stdout, more.stdout[-2000:]
        transcript = bottle.exec("sh", "-c", "cat /home/agent/.claude/projects/*/*.jsonl", check=True).stdout
        prompts = [
            json.loads(line)["message"]["content"]
            for line in transcript.splitlines()
            if '"type":"user"' in line.replace(" ", "")
        ]
        assert "say hi" in json.dumps(prompts) and "and again" in json.dumps(prompts), prompts
        # Resuming what runs is refused in one line.
        twice = cli(home, "resume", bottle.slug, check=False)
        assert twice.stderr.strip().splitlines()[-1] == (
            f"bottle-tui: error: bottle {bottle.slug} is running already: `bottle-tui attach {bottle.slug}` opens it"
        )
    finally:
        sh("docker", "network", "disconnect", "-f", bottle.network("egress"), fake_internet, check=False)
        stop_bottle(bottle)
    assert not volume_exists(bottle.slug)


# --- cleanup: a stray volume is archived before it goes; bad input to resume -------------------------


def test_cleanup_archives_a_stray_volume_before_removing_it(
    tmp_path: Path, built_images: dict[str, str], volumes_removed: list[str]
) -> None:
    """A volume no bottle runs on and no kept state claims (a stop that died half-way): cleanup
    looks at it in a throwaway container, saves the checkout, then removes it."""
    home = tmp_path / "home"
    home.mkdir()
    slug = f"tester-{uuid.uuid4().hex[:6]}"
    volumes_removed.append(slug)
    labels = [
        "dev.bottle-tui.managed=true",
        f"dev.bottle-tui.slug={slug}",
        f"dev.bottle-tui.home={home}",
        TEST_LABEL,
    ]
    sh("docker", "volume", "create", *(a for label in labels for a in ("--label", label)), volume(slug))
    sh(
        "docker", "run", "--rm", "--network", "none", "--user", "1000:1000",
        "--mount", f"type=volume,source={volume(slug)},target=/home/agent",
        "--entrypoint", "sh", AGENT_IMAGE, "-c", "echo 'half-done work' > /home/agent/work/todo.txt",
    )  # fmt: skip
    dry = cli(home, "cleanup", "--dry-run", check=False)
    assert f"volume {volume(slug)} (home {home}; what it holds that nothing else does is archived first)" in dry.stdout
    out = cli(home, "cleanup", "--yes", check=False)
    assert out.returncode == 0, out.stderr
    tarball = archive(home, slug) / "work.tar.gz"
    with tarfile.open(tarball) as tar:
        assert tar.extractfile("work/todo.txt").read() == b"half-done work\n"  # type: ignore[union-attr]
    assert not volume_exists(slug)


def test_resume_of_a_kept_state_without_its_volume_says_what_to_do(
    tmp_path: Path, built_images: dict[str, str]
) -> None:
    home = write_home(tmp_path / "home")
    slug = f"tester-{uuid.uuid4().hex[:6]}"
    state = home / "state" / slug
    state.mkdir(parents=True)
    (state / "metadata.json").write_text(json.dumps({"agent": "tester", "backend": "docker", "slug": slug}))
    (state / ".preserve").touch()
    out = cli(home, "resume", slug, check=False)
    assert out.returncode == 1
    assert out.stderr.strip().splitlines()[-1] == (
        f"bottle-tui: error: bottle {slug} has no kept volume ({volume(slug)}): only `bottle-tui stop {slug} --keep` "
        f"keeps one (what stop saved is in {home / 'archive' / slug / 'work'})"
    )
