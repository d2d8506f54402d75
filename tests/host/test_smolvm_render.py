"""The smolvm backend's pure renderers: the pack-time Smolfile, the create-time flags, the bundle's
compose spec and the whole `machine create` argv, against golden files (no smolvm, no docker).

Regenerate the golden files after an intended change with: UPDATE_GOLDEN=1 make test-unit
"""

from __future__ import annotations

import dataclasses
import os
import shlex
import tomllib
from pathlib import Path

import pytest

from bottle_tui.backends.docker.compose import to_yaml
from bottle_tui.backends.smolvm.engine import Smolvm, create_args
from bottle_tui.backends.smolvm.render import (
    PACK_ENV_VARS,
    create_flags,
    machine_labels,
    render_bundle,
    render_smolfile,
    vm_env,
    vm_name,
)
from bottle_tui.errors import BottleError
from bottle_tui.plan import BottlePlan, placeholder

from .test_plan_compose import plan as docker_plan  # noqa: F401  (the plan the docker renderers are tested with)

GOLDEN = Path(__file__).parent / "golden"
BUNDLE_IP = "172.20.3.2"


@pytest.fixture
def plan(docker_plan: BottlePlan) -> BottlePlan:  # noqa: F811 - the fixture imported above
    """The docker renderers' plan, with its bottle on the smolvm backend."""
    return dataclasses.replace(docker_plan, bottle=dataclasses.replace(docker_plan.bottle, backend="smolvm"))


def check_golden(name: str, text: str) -> None:
    path = GOLDEN / name
    if os.environ.get("UPDATE_GOLDEN"):
        path.write_text(text)
    assert text == path.read_text(), f"{name} changed; if intended, regenerate with UPDATE_GOLDEN=1"


def _pairs(flags: list[str], flag: str) -> list[str]:
    return [flags[i + 1] for i, f in enumerate(flags) if f == flag]


def test_smolfile_golden(plan: BottlePlan) -> None:
    check_golden("smolvm-Smolfile.toml", render_smolfile(plan))


def test_smolfile_is_toml_with_only_per_image_values(plan: BottlePlan) -> None:
    doc = tomllib.loads(render_smolfile(plan))
    assert doc["entrypoint"] == ["sleep", "infinity"]
    assert doc["workdir"] == "/home/agent/work"
    assert "user" not in doc  # the image's USER; pack create carries entrypoint, workdir and env
    names = {item.split("=", 1)[0] for item in doc["env"]}
    assert names <= set(PACK_ENV_VARS)
    # The pack is shared by every bottle of the image: nothing about this bottle may be in it.
    text = render_smolfile(plan)
    for per_bottle in (plan.slug, "HTTPS_PROXY", placeholder("EXAMPLE_KEY"), "TZ="):
        assert per_bottle not in text


def test_smolfile_keys_are_all_known_to_smolvm(plan: BottlePlan) -> None:
    # The keys smolvm 1.32.2 lists when it refuses an unknown one (the contract test feeds the
    # rendered file to the real CLI as well).
    known = {
        "image",
        "entrypoint",
        "cmd",
        "env",
        "secrets",
        "workdir",
        "user",
        "cpus",
        "memory",
        "net",
        "network",
        "init",
    }
    assert set(tomllib.loads(render_smolfile(plan))) <= known


def test_create_flags_golden(plan: BottlePlan) -> None:
    check_golden("smolvm-create-flags.txt", "\n".join(create_flags(plan, address=BUNDLE_IP)) + "\n")


def test_allow_list_names_only_the_bundle(plan: BottlePlan) -> None:
    flags = create_flags(plan, address=BUNDLE_IP)
    assert _pairs(flags, "--allow-cidr") == [f"{BUNDLE_IP}/32"]
    assert "--allow-host" not in flags and "--allow-host-pattern" not in flags
    # No resolver the guest could leak names through: DNS goes to the bundle, which answers none.
    assert _pairs(flags, "--dns") == [BUNDLE_IP]
    # Routes are enforced by egress, never opened on the VM.
    assert "api.example.com" not in " ".join(flags)


def test_proxy_is_an_ip_literal(plan: BottlePlan) -> None:
    env = dict(item.split("=", 1) for item in _pairs(create_flags(plan, address=BUNDLE_IP), "--env"))
    for var in ("HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy"):
        assert env[var] == f"http://{BUNDLE_IP}:8080"
    assert "egress:8080" not in " ".join(create_flags(plan, address=BUNDLE_IP))


def test_per_bottle_env_and_placeholders_are_flags(plan: BottlePlan) -> None:
    env = dict(item.split("=", 1) for item in _pairs(create_flags(plan, address=BUNDLE_IP), "--env"))
    assert env["EXAMPLE_KEY"] == placeholder("EXAMPLE_KEY")
    assert env["BOTTLE_SLUG"] == plan.slug and env["TZ"] == "UTC"
    # Everything the agent sees is either in the pack or a flag, once.
    packed = {i.split("=", 1)[0] for i in tomllib.loads(render_smolfile(plan))["env"]}
    assert set(env) | packed == set(vm_env(plan, BUNDLE_IP))
    assert not set(env) & packed


def test_resources_round_up_to_whole_vcpus(plan: BottlePlan) -> None:
    flags = create_flags(plan, address=BUNDLE_IP)
    assert _pairs(flags, "--cpus") == ["2"]  # 1.5 cpus
    assert _pairs(flags, "--mem") == ["2048"]


def test_ca_mounted_read_only(plan: BottlePlan) -> None:
    assert _pairs(create_flags(plan, address=BUNDLE_IP), "--volume") == [f"{plan.state.ca}:/etc/bottle/ca:ro"]


@pytest.mark.parametrize("address", ["egress", "sidecars.internal", "", "172.20.3.2/32", "::1"])
def test_bundle_address_must_be_an_ipv4_literal(plan: BottlePlan, address: str) -> None:
    with pytest.raises(BottleError, match="no IPv4 address"):
        create_flags(plan, address=address)


def test_create_argv_golden(plan: BottlePlan) -> None:
    smol = Smolvm(Path("/opt/smol/smolvm"), state_dir=Path("/var/lib/smolvm-test"))
    argv = smol.argv(
        *create_args(
            name=vm_name(plan.slug),
            flags=create_flags(plan, address=BUNDLE_IP),
            from_pack=Path("/packs/agent-0123.smolmachine"),
            labels=machine_labels(plan),
        )
    )
    check_golden("smolvm-create-argv.txt", "\n".join(argv) + "\n")
    assert argv[:5] == ["/opt/smol/smolvm", "--error-format", "json", "--state-dir", "/var/lib/smolvm-test"]
    assert argv[5:9] == ["machine", "create", "--name", "claude-bottle-coder-0a1b2c"]
    assert "--smolfile" not in argv and argv[-2:] == ["--from", "/packs/agent-0123.smolmachine"]
    assert f"dev.bottle-tui.slug={plan.slug}" in _pairs(argv, "--label")


def test_from_and_smolfile_are_never_combined() -> None:
    with pytest.raises(BottleError, match="not both"):
        create_args(name="x", from_pack=Path("a.smolmachine"), smolfile=Path("Smolfile"))


def test_exec_argv_is_interactive_and_a_plain_argv_list() -> None:
    smol = Smolvm(Path("/opt/smol/smolvm"))
    argv = smol.exec_argv(
        name="claude-bottle-a-1", argv=["claude", "--continue"], tty=True, user="1000:1000", env={"TERM": "xterm"}
    )
    assert argv[0] == "env"
    tail = argv[argv.index("/opt/smol/smolvm") :]
    assert tail[:7] == ["/opt/smol/smolvm", "--error-format", "json", "machine", "exec", "--name", "claude-bottle-a-1"]
    assert ["-i", "-t"] == tail[7:9] and tail[-3:] == ["--", "claude", "--continue"]
    assert shlex.join(argv).count("TERM=xterm") == 1


def test_bundle_is_the_sidecars_alone_on_a_routable_bridge(plan: BottlePlan) -> None:
    spec = render_bundle(plan, host_uid=1000, host_gid=1000)
    check_golden("smolvm-bundle.yaml", to_yaml(spec))
    assert list(spec["services"]) == ["sidecars"]
    assert spec["services"]["sidecars"]["networks"] == {"egress": {}}
    # The host must route to the bundle (the VM's traffic leaves through the host): not internal.
    assert list(spec["networks"]) == ["egress"] and "internal" not in spec["networks"]["egress"]
    # Labelled like any bottle, with its backend, so one engine listing finds every bundle.
    assert spec["services"]["sidecars"]["labels"]["dev.bottle-tui.backend"] == "smolvm"
    assert machine_labels(plan)["dev.bottle-tui.backend"] == "smolvm"
