"""Warm bottles on the real engine: `pool fill`, claims at `start`, the refill after each, and that
a claimed bottle holds nothing of an earlier claim (no file, process, CA or credential) and no
member is handed out twice; then `stop`, `pool drain` and `cleanup` leave nothing of the home."""

from __future__ import annotations

import hashlib
import json
import ssl
import textwrap
from pathlib import Path

import pytest

from bottle_tui.backends.docker import labels
from tests.support.bottles import AUTHED, SECRET, Bottle, cli, labelled, sh, start_bottle, wait_for_fillers

pytestmark = pytest.mark.integration

OTHER_SECRET = "sk-other-" + "9" * 24


@pytest.fixture
def pool_home(tmp_path: Path, built_images: dict[str, str]) -> Path:
    home = tmp_path / "home"
    (home / "agents").mkdir(parents=True)
    (home / "bottles").mkdir()
    (home / "agents" / "warm.md").write_text("---\nbottle: warm\n---\nA warm agent.\n")
    (home / "bottles" / "warm.md").write_text(
        textwrap.dedent(
            f"""\
            ---
            egress:
              routes:
                - host: {AUTHED}
                  ports: [443]
                  auth: {{scheme: header, header: X-Api-Key, token_env: BOTTLE_TEST_TOKEN}}
            resources: {{cpus: 1, memory: 512m, pids: 256}}
            pool: {{size: 2}}
            ---
            """
        )
    )
    return home


def members(home: Path) -> dict[str, str]:
    return {m["name"]: m["state"] for m in json.loads(cli(home, "pool", "ls", "--json").stdout)}


EGRESS_ENV = """
import os
for pid in filter(str.isdigit, os.listdir("/proc")):
    with open(f"/proc/{pid}/cmdline", "rb") as f:
        if b"mitmdump" in f.read():
            print(open(f"/proc/{pid}/environ", "rb").read().decode(errors="replace"))
"""


def egress_env(b: Bottle) -> str:
    """The environment egress runs with in the bottle's bundle (where its credentials are)."""
    return sh("docker", "exec", b.sidecars, "python3", "-c", EGRESS_ENV).stdout


def test_a_claim_holds_nothing_of_an_earlier_one_and_no_member_is_claimed_twice(pool_home: Path) -> None:
    cli(pool_home, "pool", "fill")
    pooled = members(pool_home)
    assert list(pooled.values()) == ["ready", "ready"], pooled
    bottles: list[Bottle] = []
    try:
        first = start_bottle(pool_home, "warm")
        bottles.append(first)
        meta = json.loads((first.state / "metadata.json").read_text())
        assert meta["pool_member"] in pooled and meta["agent"] == "warm"
        assert "claimed by " + first.slug in (first.state / "bringup.log").read_text()
        # it is a bottle like any other: listed under its slug and agent, its identity in exec
        listed = {b["slug"]: b for b in json.loads(cli(pool_home, "ls", "--json").stdout)}
        assert listed[first.slug]["agent"] == "warm" and listed[first.slug]["services_up"] == 2
        who = cli(pool_home, "exec", first.slug, "--", "sh", "-c", 'echo "$BOTTLE_SLUG $BOTTLE_AGENT"')
        assert who.stdout.split() == [first.slug, "warm"]
        assert (first.state / "supervise" / "slug").read_text().strip() == first.slug
        assert json.loads((first.state / "egress" / "metering.json").read_text())["slug"] == first.slug
        # what the first agent leaves: files in its home and /tmp, a process, its CA
        first.exec("sh", "-c", "echo mine > ~/left-behind && echo mine > /tmp/left-behind", check=True)
        sh("docker", "exec", "-d", first.agent, "sleep", "4242")
        first_ca = (first.state / "ca" / "egress-ca.pem").read_text()
        assert SECRET in egress_env(first)

        wait_for_fillers(pool_home)  # the refill start left running
        refilled = members(pool_home)
        assert meta["pool_member"] not in refilled and len(refilled) == 2, refilled

        second = start_bottle(pool_home, "warm")
        bottles.append(second)
        second_meta = json.loads((second.state / "metadata.json").read_text())
        assert second_meta["pool_member"] in refilled and second_meta["pool_member"] != meta["pool_member"]
        assert second.exec("sh", "-c", "ls -A ~ /tmp").stdout.split().count("left-behind") == 0
        assert "sleep 4242" not in second.exec("ps", "-eo", "args").stdout
        second_ca = second.exec("cat", "/etc/bottle/ca/egress-ca.pem", check=True).stdout
        assert second_ca == (second.state / "ca" / "egress-ca.pem").read_text() != first_ca
        # made at its claim, for it, and the one egress signs with
        subject = sh("openssl", "x509", "-noout", "-subject", "-in", str(second.state / "ca" / "egress-ca.pem")).stdout
        assert second.slug in subject, subject
        ready = json.loads((second.state / "egress" / "ready").read_text())
        signing = {e["ca_sha256"] for e in ready["worker"].values()}
        assert signing == {hashlib.sha256(ssl.PEM_cert_to_DER_cert(second_ca)).hexdigest()}
        assert (second.state / "supervise" / "slug").read_text().strip() == second.slug
        wait_for_fillers(pool_home)
        assert not {meta["pool_member"], second_meta["pool_member"]} & set(members(pool_home))

        # other credentials: no member made with the first ones is claimed
        third = start_bottle(pool_home, "warm", env={"BOTTLE_TEST_TOKEN": OTHER_SECRET})
        bottles.append(third)
        assert "pool_member" not in json.loads((third.state / "metadata.json").read_text())
        held = egress_env(third)
        assert OTHER_SECRET in held and SECRET not in held
        wait_for_fillers(pool_home)  # its refill replaced the members of the first credentials

        for b in (first, third):
            cli(pool_home, "stop", b.slug)
        assert not (pool_home / "pool" / meta["pool_member"]).exists()  # the claim's link went with it
        cli(pool_home, "pool", "drain")
        assert members(pool_home) == {}
        mine = [b["slug"] for b in json.loads(cli(pool_home, "ls", "--json").stdout) if b["home"] == str(pool_home)]
        assert mine == [second.slug]
        # cleanup knows a claimed member for the bottle it became: archived, and nothing of the home is left
        cli(pool_home, "cleanup", "--yes")
        bottles.clear()
        assert (pool_home / "archive" / second.slug / "metadata.json").is_file()
        assert labelled("ps", f"{labels.HOME}={pool_home}") == []
        volumes = sh("docker", "volume", "ls", "-q", "--filter", f"label={labels.HOME}={pool_home}").stdout.split()
        assert volumes == [] and not list((pool_home / "state").iterdir())
        assert not [p for p in (pool_home / "pool").iterdir() if p.name.startswith("pool-")]
    finally:
        wait_for_fillers(pool_home)
        if bottles:
            cli(pool_home, "cleanup", "--yes", check=False)
