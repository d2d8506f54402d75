"""The git gate in a real bottle: the agent's origin is the gate, which mirrors an upstream that the
fake internet serves over HTTPS with basic auth; pushes are scanned with the real gitleaks, clean
ones arrive upstream with the operator's credential, and that credential never enters the agent."""

from __future__ import annotations

import base64
import json
import os
import random
import secrets
import string
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from tests.support.bottles import (
    GIT_CREDENTIAL,
    GIT_HOST,
    GIT_PORT,
    GIT_SECRET,
    SECRET,
    UPSTREAM_REPO,
    UPSTREAM_URL,
    Bottle,
    connect_fake_internet,
    sh,
    start_bottle,
    stop_bottle,
    write_home,
)
from tests.support.waiting import wait_for

pytestmark = pytest.mark.integration

ORIGIN = "http://git-gate:8418/repo.git"

GIT_MANIFESTS = {
    "agents/gitter.md": "---\nbottle: gitbox\n---\nYou are a test agent with a repository.\n",
    "bottles/gitbox.md": f"""---
description: a bottle whose git upstream is the fake git host
git:
  upstream: {UPSTREAM_URL}
  branch: main
  credentials_env: BOTTLE_TEST_GIT_TOKEN
  protected: [main, "release/*"]
resources: {{cpus: 1, memory: 1g, pids: 256}}
---
""",
}


def _random(alphabet: str, n: int) -> str:
    rng = random.SystemRandom()
    return "".join(rng.choice(alphabet) for _ in range(n))


def _private_key() -> str:
    body = base64.b64encode(secrets.token_bytes(300)).decode()
    lines = [body[i : i + 64] for i in range(0, len(body), 64)]
    return "\n".join(["-----BEGIN RSA PRIVATE KEY-----", *lines, "-----END RSA PRIVATE KEY-----"])


# Made fresh each run: no secret-shaped literal sits in this repository. (rule id, file text, secret)
def secret_shapes() -> dict[str, tuple[str, str, str]]:
    aws = "AKIA" + _random(string.ascii_uppercase + "234567", 16)
    ghp = "ghp_" + _random(string.ascii_letters + string.digits, 36)
    slack = f"xoxb-{_random(string.digits, 12)}-{_random(string.digits, 13)}-{_random(string.ascii_letters + string.digits, 24)}"
    key = _private_key()
    return {
        # An inline allow comment must not switch the scan off: the pushed content is the agent's.
        "aws": ("aws-access-token", f'aws_access_key_id = "{aws}"  # gitleaks:allow\n', aws),
        "github": ("github-pat", f"export GITHUB_TOKEN={ghp}\n", ghp),
        "private-key": ("private-key", f"notes\n{key}\n", key.splitlines()[1]),
        "slack": ("slack-bot-token", f"SLACK = '{slack}'\n", slack),
    }


SHAPES = secret_shapes()


def git_home(folder: Path) -> Path:
    home = write_home(folder)
    for rel, text in GIT_MANIFESTS.items():
        (home / rel).write_text(text)
    return home


def git_bottle_in(home: Path, upstream: str):
    """The agent gitter of ``home`` up, joined to the fake git host, git configured; stopped after
    (a generator for module fixtures to ``yield from``)."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("BOTTLE_TEST_GIT_TOKEN", GIT_SECRET)
        b = start_bottle(home, "gitter")
    try:
        b.fake_ip = connect_fake_internet(b, upstream, (GIT_HOST,))
        agent_sh(
            b, "git config --global user.name agent && git config --global user.email agent@bottle.test", check=True
        )
        yield b
    finally:
        stop_bottle(b, upstream)


@pytest.fixture(scope="module")
def git_bottle(tmp_path_factory: pytest.TempPathFactory, built_images: dict[str, str], upstream: str):
    yield from git_bottle_in(git_home(tmp_path_factory.mktemp("git-home")), upstream)


def agent_sh(bottle: Bottle, script: str, *args: str, check: bool = False, timeout: float = 120):
    """A shell script as the agent, in its work folder; stderr folded into stdout (git's remote: lines)."""
    result = sh(
        "docker",
        "exec",
        bottle.agent,
        "sh",
        "-c",
        "{ " + script + "\n} 2>&1",
        "agent-sh",
        *args,
        check=False,
        timeout=timeout,
    )
    if check and result.returncode != 0:
        raise AssertionError(f"agent script failed ({result.returncode}): {script}\n{result.stdout[-2000:]}")
    return result


def upstream_rev(fake: str, ref: str) -> str | None:
    out = sh(
        "docker", "exec", fake, "git", "--git-dir", UPSTREAM_REPO, "rev-parse", "--verify", "--quiet", ref, check=False
    )
    return out.stdout.strip() or None


def mirror_rev(bottle: Bottle, ref: str) -> str | None:
    out = sh(
        "docker",
        "exec",
        bottle.sidecars,
        "git",
        "--git-dir",
        "/state/git-gate/mirror/repo.git",
        "rev-parse",
        "--verify",
        "--quiet",
        ref,
        check=False,
    )
    return out.stdout.strip() or None


def decisions(bottle: Bottle) -> list[dict]:
    path = bottle.state / "git-gate" / "pushes.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def commit_on_new_branch(bottle: Bottle, branch: str, name: str, text: str) -> str:
    """A branch off origin/main with one commit adding ``name``; returns the commit id."""
    agent_sh(
        bottle,
        'git fetch -q origin && git checkout -q -B "$1" origin/main && printf "%s" "$3" > "$2" '
        '&& git add "$2" && git commit -qm "add $2"',
        branch,
        name,
        text,
        check=True,
    )
    return agent_sh(bottle, "git rev-parse HEAD", check=True).stdout.strip()


def test_checkout_has_the_gate_as_origin_and_fetch_sees_upstream(git_bottle: Bottle, upstream: str) -> None:
    assert agent_sh(git_bottle, "git remote get-url origin", check=True).stdout.strip() == ORIGIN
    # Bring-up ran before the fake internet was connected: the checkout is ready for its first pull.
    assert "agent checkout:" in (git_bottle.state / "bringup.log").read_text()
    agent_sh(git_bottle, "git pull -q origin main", check=True)
    assert agent_sh(git_bottle, "git log -1 --format=%s", check=True).stdout.strip() == "upstream: first commit"
    # Upstream moves on its own; the agent's next fetch sees it (the gate refreshes first).
    sh(
        "docker",
        "exec",
        upstream,
        "sh",
        "-c",
        f"cd /tmp/seed && echo more >> README.md && git -c user.name=op "
        f"-c user.email=op@example.test commit -qam 'upstream: second commit' && git push -q {UPSTREAM_REPO} main",
    )
    agent_sh(git_bottle, "git fetch -q origin", check=True)
    assert (
        agent_sh(git_bottle, "git log -1 --format=%s origin/main", check=True).stdout.strip()
        == "upstream: second commit"
    )
    clone = agent_sh(git_bottle, f"git clone -q {ORIGIN} /tmp/fresh && git -C /tmp/fresh log -1 --format=%s")
    assert clone.returncode == 0 and clone.stdout.strip() == "upstream: second commit", clone.stdout


def test_clean_push_arrives_upstream(git_bottle: Bottle, upstream: str) -> None:
    head = commit_on_new_branch(git_bottle, "feature/clean", "hello.py", 'print("hello")\n')
    out = agent_sh(git_bottle, "git push origin feature/clean")
    assert out.returncode == 0, out.stdout
    assert "remote: git-gate: scanned clean and pushed upstream" in out.stdout
    assert upstream_rev(upstream, "refs/heads/feature/clean") == head
    # An update (old..new) goes the same way.
    agent_sh(
        git_bottle,
        "echo 'print(2)' >> hello.py && git commit -qam more && git push -q origin feature/clean",
        check=True,
    )
    assert (
        upstream_rev(upstream, "refs/heads/feature/clean") == agent_sh(git_bottle, "git rev-parse HEAD").stdout.strip()
    )
    last = decisions(git_bottle)[-1]
    assert last["decision"] == "accepted" and last["refs"][0]["ref"] == "refs/heads/feature/clean"


@pytest.mark.parametrize("shape", sorted(SHAPES))
def test_push_with_a_secret_is_rejected_and_never_reaches_upstream(
    git_bottle: Bottle, upstream: str, shape: str
) -> None:
    rule, text, secret = SHAPES[shape]
    branch = f"leak/{shape}"
    commit = commit_on_new_branch(git_bottle, branch, f"{shape}.txt", text)
    out = agent_sh(git_bottle, f"git push origin {branch}")
    assert out.returncode != 0, out.stdout
    assert f"remote: git-gate: push of refs/heads/{branch} rejected: gitleaks found" in out.stdout
    line = 2 if shape == "private-key" else 1
    assert f"{rule} in {shape}.txt line {line} (commit {commit[:12]}); secret REDACTED" in out.stdout, out.stdout
    assert secret not in out.stdout
    assert upstream_rev(upstream, f"refs/heads/{branch}") is None
    assert mirror_rev(git_bottle, f"refs/heads/{branch}") is None
    last = decisions(git_bottle)[-1]
    assert last["decision"] == "rejected" and last["reason"] == "secrets"
    assert [f["rule"] for f in last["findings"]] == [rule] and last["findings_count"] == 1
    assert secret not in (git_bottle.state / "git-gate" / "pushes.jsonl").read_text()


def test_a_secret_removed_again_still_blocks_the_push(git_bottle: Bottle, upstream: str) -> None:
    """Every pushed commit is scanned, not only the tip: history would carry the secret upstream."""
    commit_on_new_branch(git_bottle, "feature/undo", "ok.txt", "fine\n")
    agent_sh(git_bottle, "git push -q origin feature/undo", check=True)
    before = upstream_rev(upstream, "refs/heads/feature/undo")
    _, text, _ = SHAPES["github"]
    agent_sh(
        git_bottle,
        'printf "%s" "$1" > cfg.sh && git add cfg.sh && git commit -qm leak && git rm -q cfg.sh '
        '&& git commit -qm "remove it again"',
        text,
        check=True,
    )
    out = agent_sh(git_bottle, "git push origin feature/undo")
    assert out.returncode != 0 and "github-pat in cfg.sh line 1" in out.stdout, out.stdout
    assert upstream_rev(upstream, "refs/heads/feature/undo") == before


def test_secrets_in_commit_and_tag_messages_are_found_too(git_bottle: Bottle, upstream: str) -> None:
    _, _, token = SHAPES["slack"]
    commit_on_new_branch(git_bottle, "feature/message", "m.txt", "fine\n")
    agent_sh(git_bottle, 'git commit -q --amend -m "deploy notes" -m "slack: $1"', token, check=True)
    out = agent_sh(git_bottle, "git push origin feature/message")
    assert out.returncode != 0 and "slack-bot-token in commit message line 3" in out.stdout, out.stdout
    assert token not in out.stdout and upstream_rev(upstream, "refs/heads/feature/message") is None
    agent_sh(
        git_bottle, 'git commit -q --amend -m "deploy notes" && git tag -a -m "slack: $1" v-leaky', token, check=True
    )
    out = agent_sh(git_bottle, "git push origin v-leaky")
    assert out.returncode != 0 and "slack-bot-token in tag message" in out.stdout, out.stdout
    assert upstream_rev(upstream, "refs/tags/v-leaky") is None


def token() -> str:
    """A fresh real-shaped GitHub token (gitleaks' github-pat)."""
    return "ghp_" + _random(string.ascii_letters + string.digits, 36)


def upstream_holds(fake: str, text: str) -> bool:
    """Whether any object of the upstream repository holds ``text`` (the red team's test of a leak)."""
    out = sh(
        "docker",
        "exec",
        fake,
        "sh",
        "-c",
        f'git --git-dir {UPSTREAM_REPO} cat-file --batch-all-objects --batch | grep -c -a -F -- "$1"',
        "sh",
        text,
        check=False,
    )
    return out.stdout.strip() not in ("", "0")


# Tricks that got a secret past the gate's old scan (git log -p and %B; `git log` re-encodes an IBM037
# message into garbage while upstream keeps the raw bytes): (setup script run by the agent with the
# token as $1, what it pushes, what the gate must say). Each starts from origin/main. Symlink targets
# and submodule URLs were held before and stay held.
_COMMIT = 'printf "tree %s\\nparent %s\\nauthor a <a@b.test> 1 +0000\\ncommitter a <a@b.test> 1 +0000\\n" "$(git write-tree)" "$(git rev-parse HEAD)"'
LEAK_TRICKS = {
    "nul-byte-blob": (
        'printf "bin\\000T=%s\\n" "$1" > data.bin && git add data.bin && git commit -qm data',
        "HEAD",
        "data.bin line 1",
    ),
    "author": (
        'echo a > a.txt && git add a.txt && GIT_AUTHOR_NAME="ci $1" git commit -qm author',
        "HEAD",
        "commit header line 3",
    ),
    "committer": (
        'echo c > c.txt && git add c.txt && GIT_COMMITTER_EMAIL="$1@ci.test" git commit -qm committer',
        "HEAD",
        "commit header line 4",
    ),
    "extra-header": (
        "c=$({ "
        + _COMMIT
        + '; printf "x-note %s\\n\\nhand-made\\n" "$1"; } | git hash-object -t commit -w --stdin) && git reset -q --hard $c',
        "HEAD",
        "commit header line 5",
    ),
    "encoding-header": (
        "c=$({ "
        + _COMMIT
        + '; printf "encoding IBM037\\n\\nrelease %s\\n" "$1"; } | git hash-object -t commit -w --stdin) && git reset -q --hard $c',
        "HEAD",
        "commit message line 1",
    ),
    "record-separator-in-message": (
        'echo r > r.txt && git add r.txt && git commit -qm "$(printf "one\\036two %s" "$1")"',
        "HEAD",
        "commit message line 1",
    ),
    "symlink-target": (
        'ln -s "/srv/$1" link && git add link && git commit -qm link',
        "HEAD",
        "link (symlink target) line 1",
    ),
    "submodule-url": (
        'printf "[submodule \\"s\\"]\\n\\tpath = s\\n\\turl = https://ci:%s@git.example.test/s.git\\n" "$1" > .gitmodules '
        "&& git add .gitmodules && git commit -qm submodule",
        "HEAD",
        ".gitmodules line 3",
    ),
}


@pytest.mark.parametrize("trick", sorted(LEAK_TRICKS))
def test_every_byte_of_a_pushed_commit_is_scanned(git_bottle: Bottle, upstream: str, trick: str) -> None:
    setup, what, where = LEAK_TRICKS[trick]
    secret, branch = token(), f"trick/{trick}"
    agent_sh(
        git_bottle, f'git fetch -q origin && git checkout -q -B "{branch}" origin/main && {setup}', secret, check=True
    )
    out = agent_sh(git_bottle, f"git push origin {what}:refs/heads/{branch}")
    assert out.returncode != 0 and f"github-pat in {where}" in out.stdout, out.stdout
    assert secret not in out.stdout and upstream_rev(upstream, f"refs/heads/{branch}") is None
    assert not upstream_holds(upstream, secret)


def test_paths_gitleaks_allowlists_are_scanned_all_the_same(git_bottle: Bottle, upstream: str) -> None:
    """gitleaks' stock allowlist skips these names; facing an agent, a name switches nothing off."""
    paths = ("notes.png", "node_modules/left-pad/index.js", "package-lock.json", "conf/gitleaks.toml")
    secrets_ = [token() for _ in paths]
    script = " && ".join(f'mkdir -p "$(dirname {p})" && printf "T=%s\\n" "${i + 1}" > {p}' for i, p in enumerate(paths))
    agent_sh(
        git_bottle,
        f"git fetch -q origin && git checkout -q -B trick/paths origin/main && {script} && git add -A && git commit -qm paths",
        *secrets_,
        check=True,
    )
    out = agent_sh(git_bottle, "git push origin HEAD:refs/heads/trick/paths")
    assert out.returncode != 0 and "gitleaks found 4 secrets" in out.stdout, out.stdout
    for p in paths:
        assert f"github-pat in {p} line 1" in out.stdout
    assert not any(upstream_holds(upstream, s) for s in secrets_)


# Objects no pushed commit reaches: (setup script with the token as $1 that leaves the ref to push in $REF's
# place, the refspec, what the gate must say).
OBJECT_TRICKS = {
    "blob-via-lightweight-tag": (
        'b=$(printf "T=%s\\n" "$1" | git hash-object -w --stdin) && git tag -f t-blob $b',
        "t-blob",
        "a blob no tree names line 1 (blob ",
    ),
    "annotated-tag-of-a-tree": (
        'b=$(printf "T=%s\\n" "$1" | git hash-object -w --stdin) && t=$(printf "100644 blob %s\\tkey.txt\\n" $b | git mktree) '
        '&& git tag -f -a -m "a tree" t-tree $t',
        "t-tree",
        "key.txt line 1 (blob ",
    ),
    "nested-annotated-tags": (
        'git -c advice.nestedTag=false tag -f -a -m "inner $1" t-inner origin/main && git -c advice.nestedTag=false tag -f -a -m outer t-outer t-inner '
        "&& git tag -d t-inner >/dev/null",
        "t-outer",
        "tag message line 1 (tag ",
    ),
}


@pytest.mark.parametrize("trick", sorted(OBJECT_TRICKS))
def test_objects_no_commit_reaches_are_scanned(git_bottle: Bottle, upstream: str, trick: str) -> None:
    setup, tag, where = OBJECT_TRICKS[trick]
    secret = token()
    agent_sh(git_bottle, f"git fetch -q origin && {setup}", secret, check=True)
    out = agent_sh(git_bottle, f"git push origin refs/tags/{tag}")
    assert out.returncode != 0 and f"github-pat in {where}" in out.stdout, out.stdout
    assert upstream_rev(upstream, f"refs/tags/{tag}") is None and not upstream_holds(upstream, secret)


def test_a_clean_ref_beside_a_leaky_one_goes_nowhere_either(git_bottle: Bottle, upstream: str) -> None:
    secret = token()
    commit_on_new_branch(git_bottle, "pair/clean", "fine.txt", "fine\n")
    commit_on_new_branch(git_bottle, "pair/leaky", "leak.txt", f"T={secret}\n")
    out = agent_sh(git_bottle, "git push origin pair/clean pair/leaky")
    assert out.returncode != 0 and "push of refs/heads/pair/clean, refs/heads/pair/leaky rejected" in out.stdout, (
        out.stdout
    )
    assert (
        upstream_rev(upstream, "refs/heads/pair/clean") is None
        and upstream_rev(upstream, "refs/heads/pair/leaky") is None
    )
    assert not upstream_holds(upstream, secret)


@pytest.mark.parametrize(
    "refspec",
    [
        "HEAD:refs/tags/main",
        "HEAD:refs/heads/Main",
        "HEAD:refs/heads/heads/main",
        "HEAD:refs/tags/release/9",
        "HEAD:refs/heads/HEAD",
    ],
)
def test_protected_names_cannot_be_shadowed(git_bottle: Bottle, upstream: str, refspec: str) -> None:
    """A tag main is what `git log main` shows upstream; Main is main on a case-insensitive disk."""
    commit_on_new_branch(git_bottle, "shadow", "s.txt", "shadow\n")
    out = agent_sh(git_bottle, f"git push origin {refspec}")
    ref = refspec.split(":", 1)[1]
    assert out.returncode != 0 and f"git-gate: push rejected: {ref}: " in out.stdout, out.stdout
    assert "is protected (git.protected:" in out.stdout or "reads as HEAD" in out.stdout
    assert upstream_rev(upstream, ref) is None


def test_a_push_of_thousands_of_refs_logs_one_small_line(git_bottle: Bottle, upstream: str) -> None:
    log = git_bottle.state / "git-gate" / "pushes.jsonl"
    before = log.stat().st_size
    commit_on_new_branch(git_bottle, "many", "m.txt", "many\n")
    agent_sh(
        git_bottle,
        'h=$(git rev-parse HEAD); seq 3000 | sed "s|.*|create refs/tags/release/bulk-& $h|" | git update-ref --stdin',
        check=True,
    )
    out = agent_sh(git_bottle, "git push origin 'refs/tags/release/*'", timeout=300)
    assert out.returncode != 0 and "and 2,970 more refs like these" in out.stdout, out.stdout[-2000:]
    last = decisions(git_bottle)[-1]
    assert last["reason"] == "refused" and last["ref_count"] == 3000 and last["refused_count"] == 3000
    assert log.stat().st_size - before < 32 << 10  # one bounded line, not megabytes


def test_force_push_and_delete_of_an_unprotected_branch_go_upstream(git_bottle: Bottle, upstream: str) -> None:
    commit_on_new_branch(git_bottle, "feature/rewrite", "r.txt", "first draft\n")
    agent_sh(git_bottle, "git push -q origin feature/rewrite", check=True)
    agent_sh(git_bottle, "echo 'second draft' > r.txt && git commit -q --amend -am rewritten", check=True)
    out = agent_sh(git_bottle, "git push --force origin feature/rewrite")
    assert out.returncode == 0, out.stdout
    assert (
        upstream_rev(upstream, "refs/heads/feature/rewrite")
        == agent_sh(git_bottle, "git rev-parse HEAD").stdout.strip()
    )
    out = agent_sh(git_bottle, "git push origin :feature/rewrite")
    assert out.returncode == 0, out.stdout
    assert upstream_rev(upstream, "refs/heads/feature/rewrite") is None


def test_tags_are_scanned_too(git_bottle: Bottle, upstream: str) -> None:
    _, text, secret = SHAPES["aws"]
    commit_on_new_branch(git_bottle, "tagged", "t.txt", text)
    out = agent_sh(git_bottle, "git tag leaky-tag && git push origin leaky-tag")
    assert out.returncode != 0 and "push of refs/tags/leaky-tag rejected" in out.stdout and secret not in out.stdout, (
        out.stdout
    )
    assert upstream_rev(upstream, "refs/tags/leaky-tag") is None
    commit_on_new_branch(git_bottle, "tagged-clean", "t.txt", "nothing to see\n")
    out = agent_sh(git_bottle, "git tag -a -m release v0.1 && git push origin v0.1")
    assert out.returncode == 0, out.stdout
    assert upstream_rev(upstream, "refs/tags/v0.1") is not None


def test_protected_branches_cannot_be_pushed_or_deleted(git_bottle: Bottle, upstream: str) -> None:
    main_before = upstream_rev(upstream, "refs/heads/main")
    commit_on_new_branch(git_bottle, "work", "w.txt", "work\n")
    for refspec, verb in (("HEAD:main", "pushed"), ("HEAD:refs/heads/release/2.0", "pushed"), (":main", "deleted")):
        out = agent_sh(git_bottle, f"git push origin {refspec}")
        assert out.returncode != 0, out.stdout
        assert "is protected (git.protected:" in out.stdout and f"cannot be {verb}" in out.stdout, out.stdout
    assert upstream_rev(upstream, "refs/heads/main") == main_before
    assert upstream_rev(upstream, "refs/heads/release/2.0") is None
    assert decisions(git_bottle)[-1]["reason"] == "refused"


def test_upstream_refusal_reaches_the_agent(git_bottle: Bottle, upstream: str) -> None:
    commit_on_new_branch(git_bottle, "upstream-refuses/x", "x.txt", "x\n")
    out = agent_sh(git_bottle, "git push origin upstream-refuses/x")
    assert out.returncode != 0, out.stdout
    assert "git-gate: upstream refused the push, so the gate did not take it either" in out.stdout
    assert "upstream policy: refs/heads/upstream-refuses/x is not accepted here" in out.stdout, out.stdout
    assert mirror_rev(git_bottle, "refs/heads/upstream-refuses/x") is None
    assert GIT_SECRET not in out.stdout


def test_a_remote_other_than_the_gate_is_unreachable(git_bottle: Bottle, upstream: str) -> None:
    commit_on_new_branch(git_bottle, "direct", "d.txt", "d\n")
    # Through egress: the upstream's host is on no route.
    via_proxy = agent_sh(git_bottle, f"git push {UPSTREAM_URL} HEAD:refs/heads/direct", timeout=60)
    assert via_proxy.returncode != 0 and "egress: blocked" in via_proxy.stdout, via_proxy.stdout
    # Around egress: the agent's network has no route out.
    no_proxy = agent_sh(
        git_bottle,
        "env -u HTTPS_PROXY -u https_proxy -u HTTP_PROXY -u http_proxy "
        f"git -c http.sslVerify=false push https://{git_bottle.fake_ip}:{GIT_PORT}/repo.git HEAD:refs/heads/direct",
        timeout=60,
    )
    assert no_proxy.returncode != 0 and "Failed to connect" in no_proxy.stdout, no_proxy.stdout
    assert upstream_rev(upstream, "refs/heads/direct") is None


def test_the_credential_is_nowhere_in_the_agent(git_bottle: Bottle) -> None:
    forms = (GIT_SECRET, base64.b64encode(GIT_CREDENTIAL.encode()).decode())
    env = agent_sh(git_bottle, "env; cat /proc/1/environ | tr '\\0' '\\n'").stdout
    config = agent_sh(git_bottle, "git config --list --show-origin").stdout
    inspect = sh("docker", "inspect", git_bottle.agent).stdout
    for form in forms:
        assert form not in env and form not in config and form not in inspect
        found = agent_sh(git_bottle, 'grep -rlF -- "$1" /home/agent /tmp', form)
        assert found.returncode == 1 and not found.stdout.strip(), found.stdout
    # Nor was it written to disk on the gate's side: not in gate.json, the mirror's config or the log.
    for path in (git_bottle.state / "git-gate").rglob("*"):
        if path.is_file():
            data = path.read_bytes()
            assert not any(form.encode() in data for form in forms), path


def test_the_gate_listens_on_the_internal_network_only(git_bottle: Bottle, upstream: str) -> None:
    nets = json.loads(
        sh("docker", "inspect", "--format", "{{json .NetworkSettings.Networks}}", git_bottle.sidecars).stdout
    )
    outside = nets[git_bottle.network("egress")]["IPAddress"]
    inside = nets[git_bottle.network("internal")]["IPAddress"]
    probe = "import socket,sys\ntry: socket.create_connection((sys.argv[1], 8418), 3); print('open')\nexcept OSError as e: print('closed', e)"
    # The fake internet sits on the egress network: the gate must not answer it there.
    assert sh("docker", "exec", upstream, "python3", "-c", probe, outside).stdout.startswith("closed")
    assert agent_sh(git_bottle, f'python3 -c "$1" {inside}', probe).stdout.startswith("open")


def test_bring_up_clones_the_upstream_into_the_agents_work_folder(
    tmp_path: Path, built_images: dict[str, str], upstream: str
) -> None:
    """With the upstream reachable while the bottle comes up, the agent starts with a checkout."""
    home = git_home(tmp_path / "home")
    env = {**os.environ, "BOTTLE_TEST_TOKEN": SECRET, "BOTTLE_TEST_GIT_TOKEN": GIT_SECRET}
    proc = subprocess.Popen(
        [sys.executable, "-m", "bottle_tui", "--home", str(home), "start", "gitter", "--yes", "--detach"],
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    bottle = None
    try:
        # compose creates the bottle's networks before its containers: join the fake internet at once.
        state = wait_for(
            lambda: (
                next((p for p in (home / "state").glob("*") if p.is_dir()), None) if (home / "state").is_dir() else None
            ),
            timeout=60,
            what="the bottle's state folder",
            interval=0.02,
        )
        bottle = Bottle(state.name, home)
        wait_for(
            lambda: sh("docker", "network", "inspect", bottle.network("egress"), check=False).returncode == 0,
            timeout=60,
            what="the bottle's egress network",
            interval=0.02,
        )
        bottle.fake_ip = connect_fake_internet(bottle, upstream, (GIT_HOST,))
        out, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, err
        assert f"agent checkout: cloned {ORIGIN}" in (bottle.state / "bringup.log").read_text()
        log = agent_sh(bottle, "git log -1 --format=%s && git status --short --branch", check=True).stdout
        assert log.startswith("upstream: ") and "## main...origin/main" in log, log
    finally:
        if proc.poll() is None:
            proc.kill()
        if bottle is not None:
            stop_bottle(bottle, upstream)


# --- parity: the gate's object scan finds what the gitleaks binary finds in the same files ----------

PARITY_SCRIPT = r"""
import json, os, subprocess, sys
from object_scan import scan_push
env = {**os.environ, "GIT_AUTHOR_NAME": "p", "GIT_AUTHOR_EMAIL": "p@p", "GIT_COMMITTER_NAME": "p", "GIT_COMMITTER_EMAIL": "p@p"}
git = lambda *a, data=None: subprocess.run(["git", "-C", "/tmp/r", *a], env=env, input=data, capture_output=True, check=True).stdout
os.mkdir("/tmp/r")
git("init", "-q", "-b", "main")
git("commit", "-q", "--allow-empty", "-m", "base")
names = sorted(os.listdir("/corpus"))
oids = git("hash-object", "-w", "--stdin-paths", data="\n".join("/corpus/" + n for n in names).encode()).decode().split()
tree = git("mktree", data="".join(f"100644 blob {o}\t{n}\n" for n, o in zip(names, oids)).encode()).decode().strip()
tip = git("commit-tree", "-p", "HEAD", "-m", "corpus", tree).decode().strip()  # on no ref, as in quarantine
result = scan_push("/tmp/r/.git", [tip], "gitleaks", "/opt/gitleaks/gate.toml")
ours = sorted({(f.file, f.rule, f.line) for f in result.findings})
theirs = {}
# the gate's config as the gate runs it (no inline gitleaks:allow), and gitleaks' stock config as it ships
for config, flags in (("/opt/gitleaks/gate.toml", ["--ignore-gitleaks-allow"]), ("/opt/gitleaks/gitleaks.toml", [])):
    subprocess.run(["gitleaks", "dir", "/corpus", "--no-banner", "--config", config, "--max-decode-depth", "5", "--exit-code", "0",
                    *flags, "--report-format", "json", "--report-path", "/tmp/report.json", "--log-level", "error"], check=True)
    theirs[config] = sorted({(os.path.basename(f["File"]), f["RuleID"], f["StartLine"]) for f in json.load(open("/tmp/report.json"))})
print(json.dumps({"ours": ours, "gate": theirs["/opt/gitleaks/gate.toml"], "stock": theirs["/opt/gitleaks/gitleaks.toml"],
                  "files": result.files, "objects": len(result.objects)}))
"""


def test_the_gate_scan_matches_the_gitleaks_binary(built_images: dict[str, str], tmp_path: Path) -> None:
    """gitleaks' generated rule corpus as blobs of one pushed commit: what the gate's scan (objects
    packed into files behind its own first line) finds is what `gitleaks dir` finds in the plain
    files with the gate's config, line for line (plus what its text view adds to objects that are not
    plain text); and a superset of what the stock config finds."""
    from tests.support.dlp_corpus import generate

    image = built_images["sidecars"]
    rules = tmp_path / "gitleaks.toml"
    name = f"bottle-tui-test-gate-{uuid.uuid4().hex[:6]}"
    sh("docker", "create", "--name", name, image)
    try:
        sh("docker", "cp", f"{name}:/opt/gitleaks/gitleaks.toml", str(rules))
    finally:
        sh("docker", "rm", "-f", name, check=False)
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    texts = list({text: (file_name, text) for file_name, text in generate(rules, 300)}.values())  # one path per blob
    for file_name, text in texts:
        (corpus / file_name).write_text(text)
    os.chmod(corpus, 0o755)
    gitgate = Path(__file__).resolve().parents[2] / "sidecars" / "gitgate"
    out = sh(
        "docker",
        "run",
        "--rm",
        "--network",
        "none",
        "-e",
        "PYTHONPATH=/opt/bottle/common:/opt/bottle/gitgate",
        "-v",
        f"{corpus}:/corpus:ro",
        "-v",
        f"{gitgate}:/opt/bottle/gitgate:ro",
        "--entrypoint",
        "python3",
        image,
        "-c",
        PARITY_SCRIPT,
        timeout=900,
    )
    got = json.loads(out.stdout.strip().splitlines()[-1])
    ours, gate, stock = ({tuple(x) for x in got[k]} for k in ("ours", "gate", "stock"))
    assert got["objects"] == len(texts) + 2 and got["files"] < len(texts)  # small blobs share files
    assert len(gate) >= 500 and len({f[1] for f in gate}) >= 40, "the corpus no longer exercises the rules"
    assert gate <= ours, f"only gitleaks: {sorted(gate - ours)[:10]}"
    # what the gate finds beyond it comes from its text view, which only objects with bytes that are not text get
    not_text = {n for n, t in texts if any(ord(ch) > 126 or (ord(ch) < 32 and ch not in "\t\n\r\x0b\x0c") for ch in t)}
    assert {f[0] for f in ours - gate} <= not_text, sorted(f for f in ours - gate if f[0] not in not_text)[:10]
    assert stock <= ours, sorted(stock - ours)[:10]
