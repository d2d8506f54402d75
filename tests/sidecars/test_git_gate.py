"""The git gate's pure rules (push ranges, protected branches, findings, config, upstream env) against
real git repositories in temp folders, and the host side that renders the gate's settings."""

from __future__ import annotations

import base64
import json
import subprocess
import sys
from pathlib import Path

import pytest

from bottle_tui.backends.docker.compose import render_compose, render_git_gate
from bottle_tui.errors import BottleError
from bottle_tui.manifest import ManifestError, Manifests, parse_agent, parse_bottle
from bottle_tui.plan import git_repo_name, preflight_text, resolve
from bottle_tui.state import StateDir

from tests.support.sidecars import git_gate_module

pp = git_gate_module("push_policy")
upstream_git = git_gate_module("upstream_git")

ZERO = pp.ZERO


def git(repo: Path, *args: str) -> str:
    out = subprocess.run(["git", "-C", str(repo), *args], capture_output=True, text=True, check=True,
                         env={"GIT_CONFIG_NOSYSTEM": "1", "HOME": str(repo), "PATH": "/usr/bin:/bin",
                              "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@t"})
    return out.stdout.strip()


def commit(repo: Path, name: str) -> str:
    (repo / name).write_text(name + "\n")
    git(repo, "add", name)
    git(repo, "commit", "-qm", name)
    return git(repo, "rev-parse", "HEAD")


def pushed(repo: Path, update: pp.RefUpdate) -> set[str]:
    """The commits push_range selects, as git itself lists them."""
    args = pp.push_range(update)
    return set(git(repo, "rev-list", *[a for a in args if not a.startswith("--diff-merges")]).split()) if args else set()


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    r = tmp_path / "r"
    r.mkdir()
    git(r, "init", "-q", "-b", "main")
    commit(r, "base")
    return r


# --- push ranges ------------------------------------------------------------------------------


def test_a_new_branch_brings_only_commits_no_existing_ref_reaches(repo: Path) -> None:
    base = git(repo, "rev-parse", "HEAD")
    git(repo, "checkout", "-q", "--detach")
    a, b = commit(repo, "a"), commit(repo, "b")
    git(repo, "checkout", "-q", "main")  # a, b now on no ref, as pushed objects are in pre-receive
    assert pushed(repo, pp.RefUpdate(ZERO, b, "refs/heads/feature")) == {a, b}
    assert base not in pushed(repo, pp.RefUpdate(ZERO, b, "refs/heads/feature"))


def test_a_new_branch_at_an_existing_commit_brings_nothing(repo: Path) -> None:
    head = git(repo, "rev-parse", "HEAD")
    assert pushed(repo, pp.RefUpdate(ZERO, head, "refs/heads/copy")) == set()


def test_an_update_brings_old_to_new(repo: Path) -> None:
    old = git(repo, "rev-parse", "HEAD")
    c, d = commit(repo, "c"), commit(repo, "d")
    assert pushed(repo, pp.RefUpdate(old, d, "refs/heads/main")) == {c, d}


def test_a_force_push_brings_what_the_rewritten_branch_adds(repo: Path) -> None:
    base = git(repo, "rev-parse", "HEAD")
    old = commit(repo, "old-work")
    git(repo, "reset", "-q", "--hard", base)
    new = commit(repo, "rewritten")
    assert pushed(repo, pp.RefUpdate(old, new, "refs/heads/main")) == {new}


def test_a_delete_brings_nothing_and_merges_are_scanned_against_their_first_parent(repo: Path) -> None:
    head = git(repo, "rev-parse", "HEAD")
    assert pp.push_range(pp.RefUpdate(head, ZERO, "refs/heads/x")) == []
    assert pp.push_range(pp.RefUpdate(head, head, "refs/heads/x"))[0] == "--diff-merges=first-parent"
    assert pp.push_range(pp.RefUpdate(ZERO, head, "refs/heads/x"))[0] == "--diff-merges=first-parent"


def test_parse_updates_reads_pre_receive_input_and_rejects_anything_else() -> None:
    a, b = "a" * 40, "b" * 40
    ups = pp.parse_updates(f"{ZERO} {a} refs/heads/new\n{a} {b} refs/tags/v1\n\n{b} {ZERO} refs/heads/gone\n")
    assert [u.kind for u in ups] == ["create", "update", "delete"]
    assert [u.branch for u in ups] == ["new", None, "gone"]
    for bad in ("not a line\n", f"{a} main refs/heads/x\n", f"{a[:39]} {b} refs/heads/x\n"):
        with pytest.raises(pp.GateError, match="unexpected pre-receive input"):
            pp.parse_updates(bad)


# --- protected branches -----------------------------------------------------------------------


@pytest.mark.parametrize(("branch", "expected"), [
    ("main", "main"), ("release/1.0", "release/*"), ("release/1/hotfix", "release/*"), ("prod-eu", "prod-*"),
    ("mainline", None), ("feature/main", None), ("releases/1", None), ("Main", None),
])
def test_protected_branch_matching(branch: str, expected: str | None) -> None:
    assert pp.protected_pattern(branch, ("main", "release/*", "prod-*")) == expected


def test_refusals_name_the_ref_and_the_rule() -> None:
    sha = "c" * 40
    protected = ("main",)
    assert pp.refusal(pp.RefUpdate(sha, "d" * 40, "refs/heads/topic"), protected) is None
    assert pp.refusal(pp.RefUpdate(ZERO, sha, "refs/tags/v1.0"), protected) is None
    pushed_main = pp.refusal(pp.RefUpdate(sha, "d" * 40, "refs/heads/main"), protected)
    assert pushed_main and "'main' is protected (git.protected: 'main') and cannot be pushed" in pushed_main
    deleted = pp.refusal(pp.RefUpdate(sha, ZERO, "refs/heads/main"), protected)
    assert deleted and "cannot be deleted" in deleted
    notes = pp.refusal(pp.RefUpdate(ZERO, sha, "refs/notes/commits"), protected)
    assert notes and "only branches (refs/heads/*) and tags (refs/tags/*)" in notes


# --- findings ---------------------------------------------------------------------------------

REPORT = json.dumps([
    {"RuleID": "github-pat", "File": "b.txt", "StartLine": 4, "Commit": "f" * 40, "Secret": "REDACTED", "Match": "token=REDACTED"},
    {"RuleID": "aws-access-token", "File": "a.py", "StartLine": 1, "Commit": "e" * 40, "Secret": "REDACTED", "Match": "x"},
    {"RuleID": "aws-access-token", "File": "a.py", "StartLine": 1, "Commit": "e" * 40, "Secret": "REDACTED", "Match": "x"},
])


def test_findings_are_reduced_to_rule_file_line_commit_and_deduplicated() -> None:
    found = pp.findings(pp.report_items(REPORT))
    assert found == [pp.Finding("aws-access-token", "a.py", 1, "e" * 40), pp.Finding("github-pat", "b.txt", 4, "f" * 40)]
    assert found[0].describe() == "aws-access-token in a.py line 1 (commit eeeeeeeeeeee); secret REDACTED"
    assert pp.report_items("") == [] and pp.report_items("[]") == []
    with pytest.raises(pp.GateError, match="not JSON"):
        pp.report_items("{")
    for not_findings in ('{"RuleID": "x"}', '["x"]'):
        with pytest.raises(pp.GateError, match="not a list of findings"):
            pp.report_items(not_findings)


def test_message_findings_point_at_the_message_and_its_line() -> None:
    msgs = [pp.Message("commit message", "a" * 40, "fix\n\nbody line"), pp.Message("tag message", "b" * 40, "object x\ntag v1\n\nsecret here")]
    text, starts = pp.message_text(msgs)
    lines = text.split("\n")
    assert lines[starts[0] - 1] == "fix" and lines[starts[1] - 1] == "object x"
    assert pp.locate_in_messages(msgs, starts, "r", lines.index("body line") + 1) == pp.Finding("r", "commit message", 3, "a" * 40)
    assert pp.locate_in_messages(msgs, starts, "r", lines.index("secret here") + 1) == pp.Finding("r", "tag message", 4, "b" * 40)


def test_rejection_lines_say_what_was_found_and_what_to_do() -> None:
    lines = pp.rejection_lines("refs/heads/x", pp.findings(pp.report_items(REPORT)))
    assert lines[0] == "git-gate: push of refs/heads/x rejected: gitleaks found 2 secrets; nothing was sent upstream"
    assert lines[1].endswith("aws-access-token in a.py line 1 (commit eeeeeeeeeeee); secret REDACTED")
    assert "token=" not in "\n".join(lines)  # never the match, even redacted
    assert "rebase" in lines[-1]
    one = pp.rejection_lines("refs/tags/v1", pp.findings(pp.report_items(REPORT))[:1])
    assert one[0] == "git-gate: push of refs/tags/v1 rejected: gitleaks found 1 secret; nothing was sent upstream"


# --- gate.json and the host that renders it ---------------------------------------------------

AGENT = "---\nbottle: web\n---\n"
BOTTLE = """---
git:
  upstream: https://git.example.com/org/my-repo.git
  branch: trunk
  credentials_env: GIT_TOKEN
  protected: [trunk, "release/*"]
---
"""


def plan_for(bottle_text: str, tmp_path: Path):
    home = tmp_path / "home"
    bottle = parse_bottle(home / "bottles" / "web.md", bottle_text)
    manifests = Manifests(home=home, agents={"coder": parse_agent(home / "agents" / "coder.md", AGENT)},
                          bottles={"web": bottle}, agents_from_defaults=False)
    return resolve(manifests, "coder", slug="coder-1", images={"agent": "a", "sidecars": "s"}, started_at="t",
                   state=StateDir(home / "state" / "coder-1"))


def test_the_host_renders_a_complete_gate_config_the_gate_accepts(tmp_path: Path) -> None:
    plan = plan_for(BOTTLE, tmp_path)
    assert plan.daemons == ("egress", "git-gate", "supervise", "status")
    assert plan.git_origin == "http://git-gate:8418/my-repo.git"
    assert "git-gate" in plan.agent_env["NO_PROXY"].split(",")
    assert "the agent's origin is the gate http://git-gate:8418/my-repo.git: pushes scanned with gitleaks; protected: trunk, release/*" in preflight_text(plan)
    doc = render_git_gate(plan)
    path = tmp_path / "gate.json"
    path.write_text(json.dumps(doc))
    cfg = pp.load_config(str(path))
    assert (cfg.repo, cfg.branch, cfg.protected, cfg.credentials_env, cfg.port) == ("my-repo", "trunk", ("trunk", "release/*"), "GIT_TOKEN", 8418)
    assert cfg.refresh_timeout_seconds < cfg.first_mirror_timeout_seconds


def test_a_bottle_without_git_has_no_gate(tmp_path: Path) -> None:
    plan = plan_for("---\n---\n", tmp_path)
    assert plan.daemons == ("egress", "supervise", "status") and plan.git_origin is None and render_git_gate(plan) is None
    sidecars = render_compose(plan, host_uid=1, host_gid=1)["services"]["sidecars"]
    assert sidecars["networks"]["internal"]["aliases"] == ["egress", "status", "supervise"]
    assert [v["target"] for v in sidecars["volumes"]] == ["/state/egress", "/state/supervise", "/state/status"]


@pytest.mark.parametrize("upstream", ["git@git.example.com:org/r.git", "ssh://git.example.com/r.git", "/srv/git/r.git"])
def test_upstreams_the_gate_cannot_mirror_are_refused_at_start(tmp_path: Path, upstream: str) -> None:
    with pytest.raises(BottleError, match="git.upstream: the git gate mirrors https:// upstreams only"):
        plan_for(f"---\ngit: {{upstream: '{upstream}'}}\n---\n", tmp_path)


@pytest.mark.parametrize(("upstream", "name"), [
    ("https://h/org/repo.git", "repo"), ("https://h/org/repo", "repo"), ("https://h/org/repo.git/", "repo"),
    ("https://h/a/we ird!.git", "we-ird"), ("https://h/", "h"),
])
def test_repo_names(upstream: str, name: str) -> None:
    assert git_repo_name(upstream) == name


@pytest.mark.parametrize(("value", "problem"), [
    ("protected: main", "expected a list"),
    ("protected: ['refs/heads/main']", "is a ref; write the branch name only"),
    ("protected: ['a..b']", "is not a branch name or glob"),
    ("protected: [main, 3]", "expected a string"),
])
def test_bad_protected_lists_are_one_line_errors(value: str, problem: str) -> None:
    with pytest.raises(ManifestError) as err:
        parse_bottle(Path("/h/bottles/b.md"), f"---\ngit:\n  upstream: https://h/r.git\n  {value}\n---\n")
    assert problem in str(err.value) and "git.protected" in str(err.value) and "\n" not in str(err.value)


def gate_json(tmp_path: Path, **changes: object) -> str:
    doc = {"version": 1, "upstream": "https://h/r.git", "repo": "r", "branch": "main", "protected": [],
           "credentials_env": None, "port": 8418, "listen_alias": "git-gate", "refresh_timeout_seconds": 20,
           "first_mirror_timeout_seconds": 600}
    doc.update(changes)
    for key in [k for k, v in changes.items() if v is KeyError]:
        del doc[key]
    path = tmp_path / "gate.json"
    path.write_text(json.dumps(doc))
    return str(path)


@pytest.mark.parametrize(("changes", "problem"), [
    ({"protected": KeyError}, "missing key 'protected'; the gate has no defaults"),
    ({"extra": 1}, "unknown key 'extra'"),
    ({"port": "8418"}, "port has the wrong type"),
    ({"version": 2}, "version 2 is not understood"),
    ({"first_mirror_timeout_seconds": 0}, "a timeout is out of range"),
    ({"repo": "../etc"}, "not a plain repository name"),
    ({"protected": ["main", ""]}, "protected must be a list of branch names or globs"),
    ({"protected": [3]}, "protected must be a list of branch names or globs"),
])
def test_the_gate_refuses_an_incomplete_or_odd_config(tmp_path: Path, changes: dict, problem: str) -> None:
    with pytest.raises(pp.GateError, match=problem.replace("(", r"\(")):
        pp.load_config(gate_json(tmp_path, **changes))


# --- the upstream's environment: the credential only in env-borne git config ----------------------


def test_the_credential_goes_in_an_env_config_header_scoped_to_the_upstream(tmp_path: Path) -> None:
    cfg = pp.load_config(gate_json(tmp_path, credentials_env="GIT_TOKEN"))
    env = upstream_git.git_env(cfg, str(tmp_path), {"GIT_TOKEN": "tok123", "GIT_CONFIG_COUNT": "5", "PATH": "/bin"})
    pairs = {env[f"GIT_CONFIG_KEY_{i}"]: env[f"GIT_CONFIG_VALUE_{i}"] for i in range(int(env["GIT_CONFIG_COUNT"]))}
    header = pairs["http.https://h/r.git.extraHeader"]
    assert base64.b64decode(header.removeprefix("Authorization: Basic ")) == b"x-access-token:tok123"
    assert pairs["http.followRedirects"] == "false" and env["GIT_TERMINAL_PROMPT"] == "0"
    # user:password is used as written
    env = upstream_git.git_env(cfg, str(tmp_path), {"GIT_TOKEN": "me:pw"})
    assert base64.b64encode(b"me:pw").decode() in "".join(v for k, v in env.items() if k.startswith("GIT_CONFIG_VALUE_"))
    with pytest.raises(pp.GateError, match=r"\$GIT_TOKEN \(git.credentials_env\) is empty"):
        upstream_git.git_env(cfg, str(tmp_path), {})


def test_upstream_words_are_scrubbed_of_the_credential(tmp_path: Path) -> None:
    cfg = pp.load_config(gate_json(tmp_path, credentials_env="GIT_TOKEN"))
    environ = {"GIT_TOKEN": "tok123"}
    said = f"denied tok123 {upstream_git.basic_credential('tok123')}"
    assert upstream_git.scrub(said, cfg, environ) == "denied [credential] [credential]"


def test_forwarded_updates_carry_a_lease_on_what_the_gate_saw(tmp_path: Path) -> None:
    cfg = pp.load_config(gate_json(tmp_path))
    a, b = "a" * 40, "b" * 40
    argv = upstream_git.push_argv(cfg, [pp.RefUpdate(ZERO, a, "refs/heads/new"), pp.RefUpdate(a, b, "refs/heads/up"),
                                        pp.RefUpdate(b, ZERO, "refs/heads/gone")])
    assert "--force-with-lease=refs/heads/new:" in argv and f"--force-with-lease=refs/heads/up:{a}" in argv
    assert f"--force-with-lease=refs/heads/gone:{b}" in argv
    assert argv[-4:] == ["https://h/r.git", f"{a}:refs/heads/new", f"{b}:refs/heads/up", ":refs/heads/gone"]
    assert "--atomic" in argv and "--atomic" not in upstream_git.push_argv(cfg, [pp.RefUpdate(ZERO, a, "refs/heads/new")])
