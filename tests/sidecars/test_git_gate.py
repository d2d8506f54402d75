"""The git gate's pure rules (which objects a push brings and how they are written for gitleaks,
protected names, findings, the gate's gitleaks config, the push log, config, upstream env) against
real git repositories in temp folders, and the host side that renders the gate's settings."""

from __future__ import annotations

import base64
import json
import subprocess
import sys
import tomllib
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
scan = git_gate_module("object_scan")
gate_rules = git_gate_module("gate_rules")
pre_receive = git_gate_module("pre_receive")

ZERO = pp.ZERO


def git(repo: Path, *args: str, input_: str | None = None) -> str:
    out = subprocess.run(
        ["git", "-C", str(repo), *args],
        capture_output=True,
        text=True,
        check=True,
        input=input_,
        env={
            "GIT_CONFIG_NOSYSTEM": "1",
            "HOME": str(repo),
            "PATH": "/usr/bin:/bin",
            "GIT_AUTHOR_NAME": "t",
            "GIT_AUTHOR_EMAIL": "t@t",
            "GIT_COMMITTER_NAME": "t",
            "GIT_COMMITTER_EMAIL": "t@t",
        },
    )
    return out.stdout.strip()


def commit(repo: Path, name: str) -> str:
    (repo / name).write_text(name + "\n")
    git(repo, "add", name)
    git(repo, "commit", "-qm", name)
    return git(repo, "rev-parse", "HEAD")


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    r = tmp_path / "r"
    r.mkdir()
    git(r, "init", "-q", "-b", "main")
    commit(r, "base")
    return r


def hash_object(repo: Path, kind: str, data: bytes) -> str:
    out = subprocess.run(
        ["git", "-C", str(repo), "hash-object", "-t", kind, "-w", "--stdin"],
        input=data,
        capture_output=True,
        check=True,
    )
    return out.stdout.decode().strip()


def kinds(repo: Path, oids: list[str]) -> dict[str, str]:
    return {o: git(repo, "cat-file", "-t", o) for o in oids}


# --- which objects a push brings ------------------------------------------------------------------


def test_a_new_branch_brings_every_object_no_ref_reaches(repo: Path) -> None:
    base = git(repo, "rev-parse", "HEAD")
    git(repo, "checkout", "-q", "--detach")
    a = commit(repo, "a")
    git(repo, "checkout", "-q", "main")  # a is now on no ref, as pushed objects are in pre-receive
    found = scan.new_objects(str(repo / ".git"), [a])
    blob_a = git(repo, "rev-parse", f"{a}:a")
    assert set(found) == {a, git(repo, "rev-parse", f"{a}^{{tree}}"), blob_a}
    assert base not in found and git(repo, "rev-parse", f"{base}:base") not in found
    assert scan.new_objects(str(repo / ".git"), [base]) == [] and scan.new_objects(str(repo / ".git"), []) == []


def test_objects_no_commit_reaches_are_brought_too(repo: Path) -> None:
    """A blob or a tree pushed as a ref, and tags of tags: each object on the way is new."""
    blob = hash_object(repo, "blob", b"only via a tag\n")
    tree = git(repo, "mktree", input_=f"100644 blob {blob}\tk.txt\n")
    inner = hash_object(repo, "tag", f"object {tree}\ntype tree\ntag inner\ntagger t <t@t> 1 +0000\n\ninner\n".encode())
    outer = hash_object(repo, "tag", f"object {inner}\ntype tag\ntag outer\ntagger t <t@t> 1 +0000\n\nouter\n".encode())
    gd = str(repo / ".git")
    assert scan.new_objects(gd, [blob]) == [blob]
    assert kinds(repo, scan.new_objects(gd, [outer])) == {outer: "tag", inner: "tag", tree: "tree", blob: "blob"}


def test_tree_entries_and_names_come_from_the_raw_tree(repo: Path) -> None:
    blob = hash_object(repo, "blob", b"x")
    tree = git(repo, "mktree", input_=f"100644 blob {blob}\tplain.txt\n120000 blob {blob}\tlink\n")
    raw = subprocess.run(["git", "-C", str(repo), "cat-file", "tree", tree], capture_output=True, check=True).stdout
    assert scan.tree_entries(raw) == [("120000", b"link", blob), ("100644", b"plain.txt", blob)]


def test_objects_are_named_by_the_first_new_tree_entry_and_commit(repo: Path) -> None:
    git(repo, "checkout", "-q", "--detach")
    (repo / "dir").mkdir()
    (repo / "dir" / "f.txt").write_text("f\n")
    (repo / "ln").symlink_to("/target")
    git(repo, "add", ".")
    git(repo, "commit", "-qm", "c")
    head = git(repo, "rev-parse", "HEAD")
    git(repo, "checkout", "-q", "main")
    gd = str(repo / ".git")
    objects = [
        scan.PushObject(o, k, s) for o, k, s, _ in scan._cat_file(gd, scan.new_objects(gd, [head]), "--batch-check")
    ]
    by_oid = {o.oid: o for o in objects}
    raw = {o: d for o, _, _, d in scan._cat_file(gd, [o.oid for o in objects if o.kind != "blob"], "--batch")}
    scan._name_objects(objects, by_oid, raw)
    f = by_oid[git(repo, "rev-parse", f"{head}:dir/f.txt")]
    ln = by_oid[git(repo, "rev-parse", f"{head}:ln")]
    assert (f.path, f.name, f.commit, f.symlink) == ("dir/f.txt", b"f.txt", head, False)
    assert (ln.path, ln.symlink) == ("ln", True)


# --- how objects are written for gitleaks ---------------------------------------------------------


def test_the_text_view_drops_nul_bytes_and_maps_its_lines_back() -> None:
    assert scan.text_view(b"plain text\n\tand tabs\n") is None
    view, line_map = scan.text_view(b"\x01\x02\n\nghp_abcd\0efgh rest\n\xff\xfe\x00more printable\n")
    assert view == b"\n\nghp_abcdefgh rest\n\nmore printable\n"  # runs of 8+ printable bytes, one a line
    assert line_map == [(1, 1), (5, 4)]  # (view line, object line) where each run starts
    seg = scan.Segment(0, "text", 2, 1, line_map)
    assert scan._object_line(seg, 3) == 3 and scan._object_line(seg, 5) == 4 and scan._object_line(seg, 6) == 5
    utf16 = "token=ghp_x".encode("utf-16-le")
    assert scan.text_view(utf16)[0] == b"token=ghp_x"
    # a byte that is not text right after a token ends its run, as a space would
    assert scan.text_view(b"key ghp_0123456789\x01tail")[0] == b"key ghp_0123456789"


@pytest.mark.parametrize(
    ("name", "safe"),
    [
        (b"config.py", "config.py"),
        (b"notes.png", "notes.png"),
        (b"a b/\xff.txt", "a_b__.txt"),
        (b"secret.tar.gz", "secret_tar_gz"),
        (b"x.ZIP", "x_ZIP"),
        (b"y.lz", "y_lz"),
        (b"k.yaml", "k.yaml"),
        (None, "blob"),
        (b"", "blob"),
    ],
)
def test_file_names_keep_the_entry_name_but_never_read_as_an_archive(name: bytes | None, safe: str) -> None:
    assert scan.safe_name(name, "blob") == safe


def test_no_pushed_byte_sits_where_gitleaks_sniffs_for_a_file_type() -> None:
    assert len(scan.HEADER) > 261 and scan.HEADER.endswith(b"\n")  # tar's signature is at 257
    assert scan._framed(b"plain") == scan.HEADER + b"plain"
    iso = b"x" * (32769 - len(scan.HEADER)) + b"CD001" + b"y" * 100
    framed = scan._framed(iso)
    assert framed[32769:32774] != b"CD001" and framed.endswith(iso) and len(framed) == len(scan.HEADER) + 1 + len(iso)


def files_of(folder: Path) -> list[Path]:
    return sorted(folder.iterdir(), key=lambda p: int(p.name.split("_")[0]))


def test_large_views_are_cut_into_overlapping_pieces_whose_lines_map_back(tmp_path: Path) -> None:
    writer = scan._Writer(str(tmp_path))
    data = b"".join(b"line %06d\n" % i for i in range(30000))  # 330 kB, 11 bytes a line
    writer.view(7, "raw", data)
    writer.flush()
    files = files_of(tmp_path)
    assert len(files) == len(writer.files) >= 4 and all(p.stat().st_size < 100_000 for p in files)
    assert writer.bytes == sum(p.stat().st_size for p in files)
    for path in files:
        body = path.read_bytes()
        assert body.startswith(scan.HEADER)
        first = body[len(scan.HEADER) :].split(b"\n", 1)[0]
        seg, line = writer.locate(f"/x/objects/{path.name}", 2)  # gitleaks' line 2: the file's first pushed line
        assert seg.index == 7 and data.split(b"\n")[line - 1].endswith(first), (path.name, line, first)
    one, two = (p.read_bytes()[len(scan.HEADER) :] for p in files[:2])
    assert one[-scan.OVERLAP :] == two[: scan.OVERLAP]  # consecutive pieces share OVERLAP bytes


def test_small_views_share_files_and_each_line_maps_to_its_object(tmp_path: Path) -> None:
    writer = scan._Writer(str(tmp_path))
    for i in range(300):
        writer.view(i, "raw", b"first of %d\nsecond of %d" % (i, i))  # no final newline
    writer.view(300, "raw", b"")  # nothing to scan
    writer.view(301, "raw", b"named\n", "deploy.yaml")  # a name a rule's path condition may want
    writer.flush()
    files = files_of(tmp_path)
    assert len(files) == 2 and files[0].name == "0_deploy.yaml" and files[1].name == "1_objects"
    lines = files[1].read_bytes().split(b"\n")
    for file_line in (2, 3, 300, 601):
        seg, line = writer.locate(str(files[1]), file_line)
        assert lines[file_line - 1] == (b"first of %d" if line == 1 else b"second of %d") % seg.index
    with pytest.raises(pp.GateError, match="which the gate did not write"):
        writer.locate("/x/objects/99_objects", 2)


def test_findings_say_where_they_are_in_the_object() -> None:
    c = scan.PushObject("c" * 40, "commit", 1)
    assert scan._where(c, "raw", 2, 4) == ("commit header", 2, "commit", "c" * 40)
    assert scan._where(c, "raw", 7, 4) == ("commit message", 2, "commit", "c" * 40)
    b = scan.PushObject("b" * 40, "blob", 1, path="dir/ln", commit="d" * 40, symlink=True)
    assert scan._where(b, "text", 1, 0) == ("dir/ln (symlink target)", 1, "commit", "d" * 40)
    lone = scan.PushObject("e" * 40, "blob", 1)
    assert scan._where(lone, "raw", 1, 0) == ("a blob no tree names", 1, "blob", "e" * 40)


def test_parse_updates_reads_pre_receive_input_and_rejects_anything_else() -> None:
    a, b = "a" * 40, "b" * 40
    ups = pp.parse_updates(f"{ZERO} {a} refs/heads/new\n{a} {b} refs/tags/v1\n\n{b} {ZERO} refs/heads/gone\n")
    assert [u.kind for u in ups] == ["create", "update", "delete"]
    assert [u.branch for u in ups] == ["new", None, "gone"]
    for bad in ("not a line\n", f"{a} main refs/heads/x\n", f"{a[:39]} {b} refs/heads/x\n"):
        with pytest.raises(pp.GateError, match="unexpected pre-receive input"):
            pp.parse_updates(bad)


# --- protected names --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("main", "main"),
        ("release/1.0", "release/*"),
        ("release/1/hotfix", "release/*"),
        ("prod-eu", "prod-*"),
        ("mainline", None),
        ("feature/main", None),
        ("releases/1", None),
        # other spellings of the same name: case (a case-insensitive upstream), git's own prefixes
        ("Main", "main"),
        ("MAIN", "main"),
        ("Release/2", "release/*"),
        ("refs/heads/main", "main"),
        ("heads/main", "main"),
        ("tags/main", "main"),
        ("refs/tags/release/3", "release/*"),
        ("remotes/origin/main", "main"),
        ("remotes/main", None),
    ],
)
def test_protected_name_matching(name: str, expected: str | None) -> None:
    assert pp.protected_pattern(name, ("main", "release/*", "prod-*")) == expected


def test_refusals_name_the_ref_and_the_rule() -> None:
    sha = "c" * 40
    protected = ("main",)
    assert pp.refusal(pp.RefUpdate(sha, "d" * 40, "refs/heads/topic"), protected) is None
    assert pp.refusal(pp.RefUpdate(ZERO, sha, "refs/tags/v1.0"), protected) is None
    pushed_main = pp.refusal(pp.RefUpdate(sha, "d" * 40, "refs/heads/main"), protected)
    assert (
        pushed_main
        and "branch 'main' is protected (git.protected: 'main', for branches and tags alike) and cannot be pushed"
        in pushed_main
    )
    deleted = pp.refusal(pp.RefUpdate(sha, ZERO, "refs/heads/main"), protected)
    assert deleted and "cannot be deleted" in deleted
    # a tag may not shadow a protected branch (git resolves refs/tags/main before refs/heads/main)
    tag = pp.refusal(pp.RefUpdate(ZERO, sha, "refs/tags/main"), protected)
    assert tag and "refs/tags/main: tag 'main' is protected" in tag
    assert "reads as HEAD" in (pp.refusal(pp.RefUpdate(ZERO, sha, "refs/heads/HEAD"), ()) or "")
    assert "reads as HEAD" in (pp.refusal(pp.RefUpdate(ZERO, sha, "refs/tags/heads/head"), ()) or "")
    for foreign in ("refs/notes/commits", "refs/pull/1/head", "refs/remotes/origin/main", "refs/heads/", "HEAD"):
        notes = pp.refusal(pp.RefUpdate(ZERO, sha, foreign), protected)
        assert notes and "only branches (refs/heads/*) and tags (refs/tags/*)" in notes


# --- findings ---------------------------------------------------------------------------------


def test_report_items_read_gitleaks_json_and_nothing_else() -> None:
    assert pp.report_items("") == [] and pp.report_items("[]") == []
    assert pp.report_items('[{"RuleID": "x"}]') == [{"RuleID": "x"}]
    with pytest.raises(pp.GateError, match="not JSON"):
        pp.report_items("{")
    for not_findings in ('{"RuleID": "x"}', '["x"]'):
        with pytest.raises(pp.GateError, match="not a list of findings"):
            pp.report_items(not_findings)


def test_rejection_lines_say_what_was_found_and_what_to_do() -> None:
    found = [
        pp.Finding("aws-access-token", "a.py", 1, "e" * 40, "commit"),
        pp.Finding("github-pat", "tag message", 4, "f" * 40, "tag"),
    ]
    lines = pp.rejection_lines(["refs/heads/x"], found)
    assert lines[0] == "git-gate: push of refs/heads/x rejected: gitleaks found 2 secrets; nothing was sent upstream"
    assert lines[1].endswith("aws-access-token in a.py line 1 (commit eeeeeeeeeeee); secret REDACTED")
    assert lines[2].endswith("github-pat in tag message line 4 (tag ffffffffffff); secret REDACTED")
    assert "rebase" in lines[-1]
    many = pp.rejection_lines([f"refs/heads/b{i}" for i in range(3000)], found * 40)
    assert many[0].startswith(
        "git-gate: push of refs/heads/b0, refs/heads/b1, refs/heads/b2 and 2,997 more refs rejected: gitleaks found 80 secrets"
    )
    assert len(many) == pp.SHOWN + 3 and many[-2] == "git-gate:   ... and 50 more"


# --- the gate's own gitleaks config ---------------------------------------------------------------

RULES_TOML = Path(__file__).parent / "dlp_rules.toml"


def test_the_gate_config_keeps_every_rule_and_drops_every_place_based_allowlist() -> None:
    stock = tomllib.loads(RULES_TOML.read_text())
    stock["rules"][1]["allowlists"] += [
        {"condition": "AND", "paths": ["x"], "regexes": ["y"]},  # AND with a path: dropping the path would allow more
        {"regexTarget": "line", "regexes": ["--mount=type=secret,"]},  # the line is the agent's to write
        {"paths": ["z"], "stopwords": ["keep-me"]},  # OR: its value test stays
    ]
    out = tomllib.loads(gate_rules.to_toml(gate_rules.gate_config(stock)))
    assert [r["id"] for r in out["rules"]] == [r["id"] for r in stock["rules"]]
    for rule, before in zip(out["rules"], stock["rules"], strict=True):
        assert {k: v for k, v in rule.items() if k != "allowlists"} == {
            k: v for k, v in before.items() if k != "allowlists"
        }
    text = json.dumps(out)
    assert "paths" not in text and "regexTarget" not in text and "--mount" not in text
    assert out["allowlists"][0]["regexes"] == stock["allowlist"]["regexes"] and out["allowlists"][0]["stopwords"]
    assert out["rules"][0]["allowlists"] == [{"regexes": [".+EXAMPLE$"]}]
    assert out["rules"][1]["allowlists"] == [{"stopwords": ["keep-me"]}]


def test_the_gate_config_cli_writes_a_file_and_refuses_what_it_cannot_read(tmp_path: Path) -> None:
    out = tmp_path / "gate.toml"
    ok = subprocess.run(
        [sys.executable, str(gate_rules.__file__), str(RULES_TOML), str(out)], capture_output=True, text=True
    )
    assert ok.returncode == 0 and "place-based allowlists removed" in ok.stdout
    assert len(tomllib.loads(out.read_text())["rules"]) == 4
    bad = tmp_path / "bad.toml"
    bad.write_text("[extend]\nuseDefault = true\n")
    err = subprocess.run([sys.executable, str(gate_rules.__file__), str(bad), str(out)], capture_output=True, text=True)
    assert err.returncode == 1 and err.stderr.startswith(f"gate_rules.py: {bad}: ") and "\n" not in err.stderr.strip()


# --- the push log ---------------------------------------------------------------------------------


def test_a_push_of_thousands_of_refs_writes_one_small_log_line(tmp_path: Path) -> None:
    updates = [pp.RefUpdate(ZERO, f"{i:040x}", f"refs/heads/{'n' * 200}/{i}") for i in range(3000)]
    refs = pre_receive.refs_summary(updates)
    assert refs["ref_count"] == 3000 and refs["ref_kinds"] == {"create": 3000} and len(refs["refs"]) == pp.SHOWN
    state = tmp_path / "state"
    state.mkdir()
    huge = {
        "decision": "rejected",
        "reason": "refused",
        **refs,
        "details": ["x" * 5000] * 3000,
        "upstream": "y" * 10**6,
    }
    pre_receive.log_decision(str(state), huge)
    pre_receive.log_decision(str(state), {"decision": "rejected", "reason": "error", "error": "z" * 10**6})
    lines = (state / "pushes.jsonl").read_bytes().splitlines()
    assert len(lines) == 2 and all(len(line) <= pre_receive.MAX_RECORD for line in lines)
    first = json.loads(lines[0])
    assert first["truncated"] and first["ref_count"] == 3000 and first["decision"] == "rejected"


def test_the_push_log_rotates_at_its_cap(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(pre_receive.layout, "PUSH_LOG_CAP", pre_receive.layout.Cap(4096, 2))
    for i in range(200):
        pre_receive.log_decision(str(tmp_path), {"decision": "accepted", "n": i, "pad": "p" * 100})
    files = sorted(p.name for p in tmp_path.iterdir())
    assert files == ["pushes.jsonl", "pushes.jsonl.1", "pushes.jsonl.2"]
    assert all((tmp_path / f).stat().st_size <= 4096 for f in files)
    assert json.loads((tmp_path / "pushes.jsonl").read_text().splitlines()[-1])["n"] == 199


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
    manifests = Manifests(
        home=home,
        agents={"coder": parse_agent(home / "agents" / "coder.md", AGENT)},
        bottles={"web": bottle},
        agents_from_defaults=False,
    )
    return resolve(
        manifests,
        "coder",
        slug="coder-1",
        images={"agent": "a", "sidecars": "s"},
        started_at="t",
        state=StateDir(home / "state" / "coder-1"),
    )


def test_the_host_renders_a_complete_gate_config_the_gate_accepts(tmp_path: Path) -> None:
    plan = plan_for(BOTTLE, tmp_path)
    assert plan.daemons == ("egress", "git-gate", "supervise", "status")
    assert plan.git_origin == "http://git-gate:8418/my-repo.git"
    assert "git-gate" in plan.agent_env["NO_PROXY"].split(",")
    assert (
        "the agent's origin is the gate http://git-gate:8418/my-repo.git: pushes scanned with gitleaks; protected: trunk, release/*"
        in preflight_text(plan)
    )
    doc = render_git_gate(plan)
    path = tmp_path / "gate.json"
    path.write_text(json.dumps(doc))
    cfg = pp.load_config(str(path))
    assert (cfg.repo, cfg.branch, cfg.protected, cfg.credentials_env, cfg.port) == (
        "my-repo",
        "trunk",
        ("trunk", "release/*"),
        "GIT_TOKEN",
        8418,
    )
    assert cfg.refresh_timeout_seconds < cfg.first_mirror_timeout_seconds


def test_a_bottle_without_git_has_no_gate(tmp_path: Path) -> None:
    plan = plan_for("---\n---\n", tmp_path)
    assert (
        plan.daemons == ("egress", "supervise", "status") and plan.git_origin is None and render_git_gate(plan) is None
    )
    sidecars = render_compose(plan, host_uid=1, host_gid=1)["services"]["sidecars"]
    assert sidecars["networks"]["internal"]["aliases"] == ["egress", "status", "supervise"]
    assert [v["target"] for v in sidecars["volumes"]] == ["/state/egress", "/state/supervise", "/state/status"]


@pytest.mark.parametrize("upstream", ["git@git.example.com:org/r.git", "ssh://git.example.com/r.git"])
def test_upstreams_the_gate_cannot_mirror_are_refused_at_start(tmp_path: Path, upstream: str) -> None:
    with pytest.raises(
        BottleError, match="git.upstream: the git gate mirrors https:// upstreams and repositories on this machine only"
    ):
        plan_for(f"---\ngit: {{upstream: '{upstream}'}}\n---\n", tmp_path)


@pytest.mark.parametrize(
    ("upstream", "name"),
    [
        ("https://h/org/repo.git", "repo"),
        ("https://h/org/repo", "repo"),
        ("https://h/org/repo.git/", "repo"),
        ("https://h/a/we ird!.git", "we-ird"),
        ("https://h/", "h"),
    ],
)
def test_repo_names(upstream: str, name: str) -> None:
    assert git_repo_name(upstream) == name


@pytest.mark.parametrize(
    ("value", "problem"),
    [
        ("protected: main", "expected a list"),
        ("protected: ['refs/heads/main']", "is a ref; write the branch name only"),
        ("protected: ['a..b']", "is not a branch name or glob"),
        ("protected: [main, 3]", "expected a string"),
    ],
)
def test_bad_protected_lists_are_one_line_errors(value: str, problem: str) -> None:
    with pytest.raises(ManifestError) as err:
        parse_bottle(Path("/h/bottles/b.md"), f"---\ngit:\n  upstream: https://h/r.git\n  {value}\n---\n")
    assert problem in str(err.value) and "git.protected" in str(err.value) and "\n" not in str(err.value)


def gate_json(tmp_path: Path, **changes: object) -> str:
    doc = {
        "version": 1,
        "upstream": "https://h/r.git",
        "review": False,
        "slug": "coder-1",
        "start": None,
        "repo": "r",
        "branch": "main",
        "protected": [],
        "credentials_env": None,
        "port": 8418,
        "listen_alias": "git-gate",
        "refresh_timeout_seconds": 20,
        "first_mirror_timeout_seconds": 600,
    }
    doc.update(changes)
    for key in [k for k, v in changes.items() if v is KeyError]:
        del doc[key]
    path = tmp_path / "gate.json"
    path.write_text(json.dumps(doc))
    return str(path)


@pytest.mark.parametrize(
    ("changes", "problem"),
    [
        ({"protected": KeyError}, "missing key 'protected'; the gate has no defaults"),
        ({"extra": 1}, "unknown key 'extra'"),
        ({"port": "8418"}, "port has the wrong type"),
        ({"version": 2}, "version 2 is not understood"),
        ({"first_mirror_timeout_seconds": 0}, "a timeout is out of range"),
        ({"repo": "../etc"}, "not a plain repository name"),
        ({"protected": ["main", ""]}, "protected must be a list of branch names or globs"),
        ({"protected": [3]}, "protected must be a list of branch names or globs"),
        ({"review": 1}, "review has the wrong type"),
        ({"upstream": None}, "needs review: true; the host brings pushes home"),
        ({"start": "main"}, "start must be a commit id or null"),
    ],
)
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
    assert base64.b64encode(b"me:pw").decode() in "".join(
        v for k, v in env.items() if k.startswith("GIT_CONFIG_VALUE_")
    )
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
    argv = upstream_git.push_argv(
        cfg,
        [
            pp.RefUpdate(ZERO, a, "refs/heads/new"),
            pp.RefUpdate(a, b, "refs/heads/up"),
            pp.RefUpdate(b, ZERO, "refs/heads/gone"),
        ],
    )
    assert "--force-with-lease=refs/heads/new:" in argv and f"--force-with-lease=refs/heads/up:{a}" in argv
    assert f"--force-with-lease=refs/heads/gone:{b}" in argv
    assert argv[-4:] == ["https://h/r.git", f"{a}:refs/heads/new", f"{b}:refs/heads/up", ":refs/heads/gone"]
    assert "--atomic" in argv and "--atomic" not in upstream_git.push_argv(
        cfg, [pp.RefUpdate(ZERO, a, "refs/heads/new")]
    )
