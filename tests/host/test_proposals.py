"""The proposals library (bottle_tui/proposals.py): schema, atomic writes, exactly-once decisions
between real racing processes, validation of an operator's narrowing, apply to routes.yaml, audit,
and hostile agent text kept as sent but shown inert."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import yaml

from bottle_contract.files import atomic_write
from bottle_contract.policy import yaml_text
from bottle_contract.proposal import ID_RE
from bottle_tui import cli, policy_diff, proposals
from bottle_tui.bottle_files import LocalFiles
from bottle_tui.cli import review
from bottle_tui.console.inert import inert
from bottle_tui.errors import BottleError
from bottle_tui.state import StateDir

ROUTES = textwrap.dedent("""\
    version: 1
    bottle: sandbox
    dlp: {body: true, disabled_rules: [], max_body_bytes: 8388608}
    routes:
    - host: api.example.com
      ports: [443]
      methods: [POST]
      paths: [/v1/*]
      schemes: [https]
      auth: {scheme: header, header: x-api-key, token_env: API_KEY}
      dlp: {body: true, disabled_rules: [], max_body_bytes: 8388608}
      model_tools: []
      once: null
    """)


def make_bottle(home: Path, slug: str) -> StateDir:
    state = StateDir(home / "state" / slug)
    state.create()
    atomic_write(state.egress / "routes.yaml", ROUTES)
    return state


@pytest.fixture
def home(tmp_path: Path) -> Path:
    return tmp_path / "home"


@pytest.fixture
def state(home: Path) -> StateDir:
    return make_bottle(home, "tester-aaaaaa")


ASK = {"host": "pypi.example.org", "ports": [443], "methods": ["GET"], "paths": ["/simple/*"]}


def routes_of(state: StateDir) -> list[dict]:
    return yaml.safe_load((state.egress / "routes.yaml").read_text())["routes"]


def test_a_proposal_is_one_json_file_with_the_documented_schema(state: StateDir) -> None:
    p = proposals.create(state, "egress-route", ASK, "need the index")
    path = state.supervise / "queue" / f"{p.id}.json"
    data = json.loads(path.read_text())
    assert set(data) == {
        "version",
        "id",
        "slug",
        "kind",
        "change",
        "reason",
        "draft",
        "created_at",
        "status",
        "decision",
    }
    assert data["status"] == "pending" and data["decision"] is None and data["slug"] == state.slug
    assert ID_RE.match(p.id)
    # atomic replace leaves no temporary file behind
    assert sorted(f.name for f in path.parent.iterdir()) == [".lock", path.name]


def test_listing_spans_every_bottle_and_hides_decided_ones_unless_asked(home: Path, state: StateDir) -> None:
    other = make_bottle(home, "tester-bbbbbb")
    a = proposals.create(state, "egress-route", ASK, "a")
    b = proposals.create(other, "egress-route", ASK, "b")
    assert {p.id for p in proposals.list_all(home)} == {a.id, b.id}
    proposals.decide(home, a.id, "reject", by="op")
    assert [p.id for p in proposals.list_all(home)] == [b.id]
    assert {p.id for p in proposals.list_all(home, include_decided=True)} == {a.id, b.id}


def test_torn_foreign_and_misnamed_files_in_the_queue_are_skipped(home: Path, state: StateDir) -> None:
    good = proposals.create(state, "egress-route", ASK, "ok")
    queue = state.supervise / "queue"
    (queue / "torn.json").write_text('{"id": "torn", "kind": "egress')
    data = dict(good.data, id="..-escape")
    (queue / "..-escape.json").write_text(json.dumps(data))  # id not allowed to start with '.'
    (queue / "other-id.json").write_text(json.dumps(dict(good.data)))  # id does not match the name
    (queue / "UPPER.json").write_text(json.dumps(dict(good.data, id="UPPER")))
    (queue / "x-slug.json").write_text(json.dumps(dict(good.data, id="x-slug", slug="someone-else")))
    assert [p.id for p in proposals.list_all(home, include_decided=True)] == [good.id]


@pytest.mark.parametrize("bad", ["../x", "a/b", "", ".lock", "A1", "x" * 65, "a\nb", "/etc/passwd"])
def test_ids_that_could_be_paths_are_refused(home: Path, state: StateDir, bad: str) -> None:
    with pytest.raises(BottleError, match="not a proposal id"):
        proposals.find(home, bad)


def test_approve_adds_a_fully_explicit_route_and_audits_it_twice(home: Path, state: StateDir) -> None:
    p = proposals.create(state, "egress-route", ASK, "need the index")
    out = proposals.decide(home, p.id, "approve", by="op (test)", scope="always")
    assert out.policy_changed and out.proposal.status == "approved"
    added = routes_of(state)[-1]
    assert added == {
        "host": "pypi.example.org",
        "ports": [443],
        "methods": ["GET"],
        "paths": ["/simple/*"],
        "schemes": ["http", "https"],
        "auth": None,
        "dlp": {"body": True, "disabled_rules": [], "max_body_bytes": 8388608},
        "model_tools": [],
        "once": None,
    }
    assert routes_of(state)[0]["auth"]["token_env"] == "API_KEY"  # the rest of the policy is kept
    saved = json.loads(p.path.read_text())
    assert (
        saved["decision"]["by"] == "op (test)"
        and saved["decision"]["change"] == {**ASK, "schemes": ["http", "https"]}
        and saved["decision"]["scope"] == "always"
    )
    for log in (state.path / "audit.jsonl", home / "audit.jsonl"):
        lines = log.read_text().splitlines()
        assert len(lines) == 1 and json.loads(lines[0])["id"] == p.id and json.loads(lines[0])["status"] == "approved"


def test_second_decision_is_refused_as_already_decided(home: Path, state: StateDir) -> None:
    p = proposals.create(state, "egress-route", ASK, "r")
    proposals.decide(home, p.id, "reject", by="first", note="no")
    with pytest.raises(proposals.AlreadyDecided, match="already rejected by first"):
        proposals.decide(home, p.id, "approve", by="second")
    assert len(routes_of(state)) == 1


RACER = """
import sys
from pathlib import Path
from bottle_tui import proposals
home, pid, action, who = Path(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4]
sys.stdin.readline()  # the start line: every racer is loaded before any decides
try:
    proposals.decide(home, pid, action, by=who)
    print("won")
except proposals.AlreadyDecided:
    print("already")
"""


def test_two_processes_racing_give_exactly_one_decision(home: Path, state: StateDir) -> None:
    ids = [proposals.create(state, "egress-route", dict(ASK, paths=[f"/p{i}/*"]), "r").id for i in range(8)]
    procs = []
    for pid in ids:
        for action, who in (("approve", "alice"), ("reject", "bob")):
            procs.append(
                (
                    pid,
                    who,
                    subprocess.Popen(
                        [sys.executable, "-c", RACER, str(home), pid, action, who],
                        stdin=subprocess.PIPE,
                        stdout=subprocess.PIPE,
                        text=True,
                    ),
                )
            )
    for _, _, proc in procs:
        proc.stdin.write("go\n")
        proc.stdin.flush()
    results = [(pid, who, proc.communicate(timeout=60)[0].strip()) for pid, who, proc in procs]
    audit = [json.loads(line) for line in (home / "audit.jsonl").read_text().splitlines()]
    for pid in ids:
        outcomes = sorted(r for p, _, r in results if p == pid)
        assert outcomes == ["already", "won"], (pid, outcomes)
        winner = next(w for p, w, r in results if p == pid and r == "won")
        final = json.loads((state.supervise / "queue" / f"{pid}.json").read_text())
        assert final["decision"]["by"] == winner
        assert [a["by"] for a in audit if a["id"] == pid] == [winner]
    approved = sum(1 for a in audit if a["status"] == "approved")
    assert len(routes_of(state)) == 1 + approved


def test_modify_may_narrow_but_never_widen(home: Path, state: StateDir) -> None:
    asked = {"host": "*.example.org", "ports": [80, 443], "methods": ["GET", "POST"], "paths": ["/api/*"]}
    wider = [
        ({"host": "example.org"}, "host"),
        ({"host": "evil.com"}, "host"),
        ({"ports": [80, 443, 8443]}, "ports"),
        ({"methods": ["GET", "DELETE"]}, "methods"),
        ({"methods": []}, "methods"),
        ({"paths": ["/*"]}, "paths"),
        ({"paths": []}, "paths"),
        ({"paths": ["/other/*"]}, "paths"),
    ]
    for patch, key in wider:
        p = proposals.create(state, "egress-route", asked, "r")
        with pytest.raises(BottleError, match=f"change.{key}"):
            proposals.decide(home, p.id, "modify", by="op", change={**asked, **patch})
        assert proposals.find(home, p.id)[1].pending
    p = proposals.create(state, "egress-route", asked, "r")
    narrow = {"host": "api.example.org", "ports": [443], "methods": ["GET"], "paths": ["/api/v1/*"]}
    out = proposals.decide(home, p.id, "modify", by="op", change=narrow)
    assert out.proposal.status == "modified" and out.proposal.data["decision"]["change"] == {
        **narrow,
        "schemes": ["http", "https"],
    }
    assert routes_of(state)[-1]["paths"] == ["/api/v1/*"]


@pytest.mark.parametrize(
    "change, key",
    [
        ({"host": "https://x.example.com"}, "host"),
        ({"host": "bad host"}, "host"),
        ({"host": "*.com"}, "host"),
        ({"host": "a.example.com", "ports": [0]}, "ports"),
        ({"host": "a.example.com", "methods": ["FETCH"]}, "methods"),
        ({"host": "a.example.com", "paths": ["no-slash"]}, "paths"),
        ({"host": "a.example.com", "paths": ["/a?b"]}, "paths"),
        ({"host": "a.example.com", "auth": {"scheme": "bearer"}}, "auth"),
    ],
)
def test_a_bad_change_is_one_line_naming_the_key(change: dict, key: str) -> None:
    with pytest.raises(BottleError) as info:
        proposals.validate_change("egress-route", change)
    assert f"change.{key}" in str(info.value) and "\n" not in str(info.value)


def test_approving_twice_after_a_crash_adds_the_route_once(home: Path, state: StateDir) -> None:
    p = proposals.create(state, "egress-route", ASK, "r")
    # A crash after the policy was written but before the proposal was marked decided: pending still.
    files = LocalFiles(state)
    before, doc = proposals.read_policy(state)
    new = proposals.policy_with(doc, "egress-route", proposals.validate_change("egress-route", ASK))
    files.commit(expect_policy=before, policy=yaml_text(new), pending=p.id, proposal=None)
    assert proposals.find(home, p.id)[1].pending
    out = proposals.decide(home, p.id, "approve", by="op")
    assert not out.policy_changed and len(routes_of(state)) == 2


def test_a_crash_while_writing_the_policy_leaves_the_old_one_whole(home: Path, state: StateDir, monkeypatch) -> None:
    p = proposals.create(state, "egress-route", ASK, "r")
    before = (state.egress / "routes.yaml").read_bytes()

    def crash(src, dst):
        raise OSError("disk gone")

    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(OSError):
        proposals.decide(home, p.id, "approve", by="op")
    monkeypatch.undo()
    assert (state.egress / "routes.yaml").read_bytes() == before
    assert [f.name for f in state.egress.iterdir() if f.name.endswith(".tmp")] == []
    assert proposals.find(home, p.id)[1].pending  # nothing lost: decide again
    assert proposals.decide(home, p.id, "approve", by="op").policy_changed


def test_policy_validation_names_the_key(tmp_path: Path) -> None:
    src = tmp_path / "routes.yaml"
    with pytest.raises(BottleError, match=r"routes\[0\]\.colour"):
        proposals.parse_policy(
            "version: 1\nbottle: b\ndlp: {body: true, disabled_rules: [], max_body_bytes: 8388608}\nroutes:\n- {host: a.example.com, ports: [443], colour: red}\n",
            src,
        )
    with pytest.raises(BottleError, match=r"routes\[0\]\.host"):
        proposals.parse_policy(
            "version: 1\nbottle: b\ndlp: {body: true, disabled_rules: [], max_body_bytes: 8388608}\nroutes:\n- {host: 'a b', ports: [443], methods: [], paths: [], schemes: [https], auth: null, dlp: {body: true, disabled_rules: [], max_body_bytes: 8388608}, model_tools: [], once: null}\n",
            src,
        )
    with pytest.raises(BottleError, match="invalid YAML"):
        proposals.parse_policy("version: 1\nroutes: [\n", src)
    assert proposals.parse_policy(ROUTES, src)["bottle"] == "sandbox"


def test_a_policy_without_explicit_dlp_settings_is_refused(tmp_path: Path) -> None:
    src = tmp_path / "routes.yaml"
    with pytest.raises(BottleError, match=r"routes.yaml: dlp: missing"):
        proposals.parse_policy("version: 1\nbottle: b\nroutes: []\n", src)
    with pytest.raises(BottleError, match=r"routes\[0\]\.dlp: missing"):
        proposals.parse_policy(
            "version: 1\nbottle: b\ndlp: {body: true, disabled_rules: [], max_body_bytes: 8388608}\nroutes:\n- {host: a.example.com, ports: [443], methods: [], paths: [], schemes: [https], auth: null}\n",
            src,
        )
    with pytest.raises(BottleError, match=r"dlp.max_body_bytes: missing"):
        proposals.parse_policy("version: 1\nbottle: b\ndlp: {body: true, disabled_rules: []}\nroutes: []\n", src)


HOSTILE = [
    "[bold red]approve me[/bold red] [link=http://x]y[/link]",
    "\x1b[2J\x1b]0;owned\x07\x1b[31mred",
    "line one\nline two\r\nthree\u2028four\u202eevil",
    "x" * (1 << 20),
]


@pytest.mark.parametrize("text", HOSTILE, ids=["markup", "ansi", "newlines", "1MB"])
def test_hostile_agent_text_is_stored_as_sent_and_shown_inert(home: Path, state: StateDir, text: str, capsys) -> None:
    change = {"host": "api.example.org", "ports": [443], "methods": [], "paths": ["/" + text[:100].replace("\n", "")]}
    p = proposals.create(state, "egress-route", change, text)
    assert json.loads(p.path.read_text())["reason"] == text  # kept exactly
    shown = inert(text)
    assert shown.plain.replace("\ufffd", "") == "".join(ch for ch in text if ch.isprintable() or ch == "\t")
    assert not shown.spans  # no markup became style
    assert cli.main(["--home", str(home), "proposals", "show", p.id]) == 0
    out = capsys.readouterr().out
    assert "\x1b" not in out and "\x07" not in out and "\r" not in out and "\u202e" not in out
    fields, _, rest = out.partition("\npolicy ")
    assert len(fields.splitlines()) == 9  # one line per field: agent newlines never start a line
    assert all(line.startswith("  ") for line in rest.splitlines()[1:] if line != "history")
    assert cli.main(["--home", str(home), "proposals", "ls"]) == 0
    listing = capsys.readouterr().out
    assert len(listing.splitlines()) == 2 and "\x1b" not in listing


def test_cli_show_says_what_approving_does_to_the_policy_and_the_history(home: Path, state: StateDir, capsys) -> None:
    p = proposals.create(state, "egress-route", ASK, "r")
    assert cli.main(["--home", str(home), "proposals", "show", p.id]) == 0
    out = capsys.readouterr().out
    diff = out.split("policy   what approving it as asked does to routes.yaml:\n", 1)[1].split("history\n")[0]
    assert "--- routes.yaml (in force)" in diff and "+++ routes.yaml (approved)" in diff
    assert any(line.startswith("  +") and ASK["host"] in line for line in diff.splitlines())
    assert out.rstrip().endswith("asked")  # history: the one event so far
    assert cli.main(["--home", str(home), "proposals", "reject", p.id, "--note", "no"]) == 0
    capsys.readouterr()
    assert cli.main(["--home", str(home), "proposals", "show", p.id]) == 0
    out = capsys.readouterr().out
    assert "policy " not in out  # decided: nothing left to approve
    assert out.splitlines()[-1].strip().endswith("rejected by " + json.loads(p.path.read_text())["decision"]["by"])


def test_cli_decides_and_reports_already_decided(home: Path, state: StateDir, capsys) -> None:
    p = proposals.create(state, "egress-route", ASK, "r")
    assert cli.main(["--home", str(home), "proposals", "reject", p.id, "--note", "use the mirror"]) == 0
    assert cli.main(["--home", str(home), "proposals", "approve", p.id]) == 1
    err = capsys.readouterr().err
    assert "already rejected" in err and err.count("\n") == 2
    assert json.loads(p.path.read_text())["decision"]["note"] == "use the mirror"
    assert cli.main(["--home", str(home), "proposals", "ls", "--all", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)[0]["status"] == "rejected"


def test_cli_modify_from_a_file_validates_before_saving(home: Path, state: StateDir, tmp_path: Path, capsys) -> None:
    p = proposals.create(state, "egress-route", ASK, "r")
    wide = tmp_path / "wide.yaml"
    wide.write_text("host: pypi.example.org\nports: [443]\nmethods: [GET]\npaths: ['/*']\n")
    assert cli.main(["--home", str(home), "proposals", "modify", p.id, "--file", str(wide)]) == 1
    assert "not within the asked paths" in capsys.readouterr().err
    narrow = tmp_path / "narrow.yaml"
    narrow.write_text("host: pypi.example.org\nports: [443]\nmethods: [GET]\npaths: ['/simple/requests/*']\n")
    assert cli.main(["--home", str(home), "proposals", "modify", p.id, "--file", str(narrow)]) == 0
    assert routes_of(state)[-1]["paths"] == ["/simple/requests/*"]


EDITOR = """#!/usr/bin/env python3
import sys
path = sys.argv[1]
text = open(path).read()
# First pass: a typo the validator must catch; second pass (the error is shown on top): the fix.
if "# error:" in text:
    body = "".join(l for l in text.splitlines(True) if not l.startswith("#"))
    text = body.replace("colour: red", "methods: [GET]\\n  paths: []\\n  schemes: [https]\\n  auth: null\\n  dlp: {body: true, disabled_rules: [], max_body_bytes: 8388608}\\n  model_tools: []\\n  once: null")
else:
    text = text.rstrip("\\n") + "\\n- host: docs.example.com\\n  ports: [443]\\n  colour: red\\n"
open(path, "w").write(text)
import os
with open(os.environ["EDITOR_LOG"], "a") as f:
    f.write("x")
"""


def run_with_a_terminal(argv: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """The CLI with a pseudo-terminal as stdin, as when an operator types the command."""
    import pty

    leader, follower = pty.openpty()
    try:
        return subprocess.run(argv, stdin=follower, capture_output=True, text=True, env=env, timeout=60)
    finally:
        os.close(leader)
        os.close(follower)


def test_routes_edit_reopens_on_a_bad_save_then_applies_and_audits(home: Path, state: StateDir, tmp_path: Path) -> None:
    editor = tmp_path / "editor.py"
    editor.write_text(EDITOR)
    editor.chmod(0o755)
    log = tmp_path / "editor.log"
    env = {**os.environ, "EDITOR": str(editor), "VISUAL": "", "EDITOR_LOG": str(log)}
    result = run_with_a_terminal(
        [sys.executable, "-m", "bottle_tui", "--home", str(home), "routes", "edit", state.slug], env
    )
    assert result.returncode == 0, result.stderr
    added = routes_of(state)[-1]
    assert added == {
        "host": "docs.example.com",
        "ports": [443],
        "methods": ["GET"],
        "paths": [],
        "schemes": ["https"],
        "auth": None,
        "dlp": {"body": True, "disabled_rules": [], "max_body_bytes": 8388608},
        "model_tools": [],
        "once": None,
    }
    assert log.read_text() == "xx"  # opened twice: the bad save was shown its error
    audit = [json.loads(line) for line in (home / "audit.jsonl").read_text().splitlines()]
    assert audit[-1]["kind"] == "policy-edit" and "docs.example.com" in audit[-1]["after"]


def test_routes_edit_without_a_terminal_is_one_line(home: Path, state: StateDir) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "bottle_tui", "--home", str(home), "routes", "edit", state.slug],
        capture_output=True,
        text=True,
        stdin=subprocess.DEVNULL,
        env={**os.environ, "EDITOR": "true"},
    )
    assert result.returncode == 1 and "needs a terminal" in result.stderr and result.stderr.count("\n") == 1


def test_a_dlp_exemption_disables_the_rule_on_the_routes_of_that_host(home: Path, state: StateDir) -> None:
    p = proposals.create(state, "dlp-exemption", {"host": "api.example.com", "rule": "generic-api-key"}, "test fixture")
    assert proposals.decide(home, p.id, "approve", by="op").policy_changed
    assert routes_of(state)[0]["dlp"] == {
        "body": True,
        "disabled_rules": ["generic-api-key"],
        "max_body_bytes": 8388608,
    }
    again = proposals.create(state, "dlp-exemption", {"host": "api.example.com", "rule": "generic-api-key"}, "twice")
    assert not proposals.decide(home, again.id, "approve", by="op").policy_changed
    nowhere = proposals.create(state, "dlp-exemption", {"host": "other.example.com", "rule": "generic-api-key"}, "r")
    with pytest.raises(BottleError, match="allow the route first"):
        proposals.decide(home, nowhere.id, "approve", by="op")
    with pytest.raises(BottleError, match=r"routes\[0\]\.dlp\.disabled_rules\[0\]"):
        proposals.parse_policy(
            "version: 1\nbottle: b\ndlp: {body: true, disabled_rules: [], max_body_bytes: 8388608}\nroutes:\n- {host: a.example.com, ports: [443], methods: [], paths: [], "
            "schemes: [https], auth: null, dlp: {body: true, disabled_rules: ['a b'], max_body_bytes: 9}, model_tools: [], once: null}\n",
            state.egress / "routes.yaml",
        )


def test_proposals_ls_never_cuts_a_change(home: Path, state: StateDir, capsys) -> None:
    """A long host with its ports and paths: all of it shows, on one line in a pipe, wrapped under
    the WHAT column on a terminal (issue 15: the ports and paths were cut at 100 characters)."""
    host = "a-very-long-subdomain-name-that-goes-on." * 3 + "example.org"
    change = {
        "host": host,
        "ports": [443, 8443],
        "methods": ["GET", "POST"],
        "paths": ["/first/path/*", "/second/one/that/is/long/*"],
    }
    p = proposals.create(state, "egress-route", change, "r")
    whole = p.summary()
    assert len(whole) > 150 and "8443" in whole and "/second/one/that/is/long/*" in whole
    assert cli.main(["--home", str(home), "proposals", "ls"]) == 0
    piped = capsys.readouterr().out.splitlines()
    assert len(piped) == 2 and piped[1].endswith(whole)
    for width in (80, 120, 20):
        lines = review.proposal_table([review._proposal_line(p)], width=width)
        column = lines[0].index("WHAT")
        assert lines[1].startswith(p.id)
        assert "".join(line[column:] for line in lines[1:]) == whole  # nothing lost, nothing added
        assert all(not line[:column].strip() for line in lines[2:])  # continuation lines sit under WHAT
        if width >= column + review.MIN_WHAT_WIDTH:
            assert max(len(line) for line in lines) < width


def test_a_commit_writes_nothing_when_the_queue_or_the_policy_changed_meanwhile(home: Path, state: StateDir) -> None:
    """The contract's commit, as deciding uses it on either side of the engine: a decision made
    from a stale read never lands."""
    files = LocalFiles(state)
    p = proposals.create(state, "egress-route", ASK, "r")
    before = files.policy_text()
    decided = {**p.data, "status": "rejected", "decision": {"by": "x"}}
    with pytest.raises(proposals.Conflict, match="changed meanwhile"):
        files.commit(expect_policy=before + "# stale\n", policy=None, pending=p.id, proposal=decided)
    assert proposals.find(home, p.id)[1].pending
    files.commit(expect_policy=before, policy=None, pending=p.id, proposal=decided)
    with pytest.raises(proposals.Conflict) as again:
        files.commit(expect_policy=before, policy=None, pending=p.id, proposal=decided)
    assert again.value.current is not None and again.value.current["status"] == "rejected"
    with pytest.raises(proposals.AlreadyDecided):
        proposals.decide(home, p.id, "approve", by="op")


def test_a_decision_is_made_again_on_a_policy_edited_meanwhile(home: Path, state: StateDir, monkeypatch) -> None:
    """An operator's edit lands between the decider's read and its commit: the decision is
    recomputed on the edited policy, so the edit and the approved route are both in force."""
    p = proposals.create(state, "egress-route", ASK, "r")
    files = LocalFiles(state)
    real_commit = LocalFiles.commit
    edits = []

    def edit_first(self, **kw):  # type: ignore[no-untyped-def]
        if not edits:
            text = self.policy_text().replace("max_body_bytes: 8388608", "max_body_bytes: 4096", 1)
            atomic_write(state.routes, text)
            edits.append(text)
        return real_commit(self, **kw)

    monkeypatch.setattr(LocalFiles, "commit", edit_first)
    out = proposals.decide(home, p.id, "approve", by="op")
    assert out.policy_changed and yaml.safe_load(files.policy_text())["dlp"]["max_body_bytes"] == 4096
    assert routes_of(state)[-1]["host"] == ASK["host"]


class FilesElsewhere:
    """A bottle's queue and policy reached through its backend, not as its state folder (as a
    swarm bottle's are): the contract's own code on real files, through another BottleFiles."""

    def __init__(self, state: StateDir) -> None:
        self.local = LocalFiles(state)
        self.slug = state.slug
        self.proposals = self.local.proposals
        self.policy_text = self.local.policy_text
        self.commit = self.local.commit

    @property
    def where(self) -> str:
        return f"/state/egress/routes.yaml of {self.slug} on node n1"


def test_a_budget_change_of_a_bottle_whose_files_are_elsewhere_is_refused_in_one_line(
    home: Path, state: StateDir
) -> None:
    """Its metering.json is on its node, which no host call writes yet: approving must not
    report a budget that egress never sees. Rejecting goes through the queue, so it works."""
    p = proposals.create(state, "budget", {"usd": 20}, "spent the budget")
    for action in ("approve", "modify"):
        with pytest.raises(BottleError) as refused:
            proposals.decide(home, p.id, action, by="op", change={"usd": 10}, files_for=FilesElsewhere)
        message = str(refused.value)
        assert "\n" not in message and "cannot be applied to tester-aaaaaa yet" in message
        assert f"bottle-tui proposals reject {p.id}" in message and "on node n1" in message
    assert proposals.find(home, p.id)[1].pending and not state.metering.exists()
    out = proposals.decide(home, p.id, "reject", by="op", files_for=FilesElsewhere)
    assert out.proposal.status == "rejected" and not state.metering.exists()
    # What approving it would do says the same, instead of a metering.json that is not here.
    p = proposals.create(state, "budget", {"usd": 30}, "spent it again")
    assert policy_diff.proposal_diff(state, p, FilesElsewhere(state)).startswith(
        f"proposal {p.id}: a budget change cannot be applied to tester-aaaaaa yet"
    )
