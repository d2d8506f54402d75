"""The Kubernetes renderer (no cluster: none can start on these machines): golden files, the core
objects read strictly by the official `kubernetes` client's models, the agent-sandbox objects
against that project's own CRD schemas (v0.5.6), the bottle's invariants, and what the Pod runs
of its own (bottle-net in a network namespace, agent-home on folders, the agent's init as PID 1).

Regenerate the golden files after an intended change with: UPDATE_GOLDEN=1 make test-unit
"""

from __future__ import annotations

import base64
import copy
import dataclasses
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from kubernetes.client import ApiClient
from pydantic import ValidationError

from bottle_tui.backends.docker.compose import render_compose
from bottle_tui.backends.kubernetes import render as k8s
from bottle_tui.errors import BottleError
from bottle_tui.manifest import GitSpec
from bottle_tui.plan import BottlePlan, placeholder

from .test_plan_compose import check_golden
from .test_plan_compose import plan as docker_plan  # noqa: F401  (the plan the docker renderers are tested with)

CRDS = json.loads((Path(__file__).parent / "agent_sandbox" / "crds-v0.5.6.json").read_text())
CORE_MODELS = {
    "Namespace": "V1Namespace",
    "ServiceAccount": "V1ServiceAccount",
    "Secret": "V1Secret",
    "ConfigMap": "V1ConfigMap",
    "PersistentVolumeClaim": "V1PersistentVolumeClaim",
    "Pod": "V1Pod",
    "NetworkPolicy": "V1NetworkPolicy",
}
BUNDLE_CONTAINERS = {"sidecars"}


@pytest.fixture
def plan(docker_plan: BottlePlan) -> BottlePlan:  # noqa: F811 - the fixture imported above
    return docker_plan


def strict_model(data: dict[str, Any], model: str) -> Any:
    """``data`` read into the client's model the way the client reads an API answer (its
    ApiClient.deserialize), then written back: the client drops keys it does not know, so any
    difference is a field name it does not have (or a value it changed); a wrong type raises."""
    client = ApiClient()
    obj = client.deserialize(json.dumps(data), model, "application/json")
    back = client.sanitize_for_serialization(obj)
    assert back == data, f"{model}: the client's model does not hold the object as written:\n{diff(data, back)}"
    return obj


def diff(want: Any, got: Any, path: str = "") -> str:
    if isinstance(want, dict) and isinstance(got, dict):
        for key in sorted(set(want) | set(got)):
            if want.get(key) != got.get(key):
                return diff(want.get(key), got.get(key), f"{path}.{key}")
    if isinstance(want, list) and isinstance(got, list) and len(want) == len(got):
        for i, (w, g) in enumerate(zip(want, got, strict=True)):
            if w != g:
                return diff(w, g, f"{path}[{i}]")
    return f"{path or '.'}: written {want!r}, read back {got!r}"


def check_schema(value: Any, schema: dict[str, Any], path: str) -> None:
    """``value`` against a CRD's structural schema: types, known properties only, required keys,
    enums, bounds, patterns. A subtree cut from the stored schema (a core type) is checked with
    the client's model it names; CEL rules (x-kubernetes-validations) are not evaluated here."""
    if "x-checked-by" in schema:
        strict_model(value, schema["x-checked-by"])
        return
    kind = schema.get("type")
    expected = {"object": dict, "array": list, "string": str, "boolean": bool, "integer": int}
    if kind in expected:
        ok = isinstance(value, expected[kind]) and not (kind == "integer" and isinstance(value, bool))
        assert ok, f"{path}: {value!r} is not of type {kind}"
    if "enum" in schema:
        assert value in schema["enum"], f"{path}: {value!r} is not one of {schema['enum']}"
    if "minimum" in schema:
        assert value >= schema["minimum"], f"{path}: {value!r} is below {schema['minimum']}"
    if "pattern" in schema:
        assert re.search(schema["pattern"], value), f"{path}: {value!r} does not match {schema['pattern']}"
    if "maxLength" in schema:
        assert len(value) <= schema["maxLength"], f"{path}: longer than {schema['maxLength']}"
    if kind == "object":
        props, extra = schema.get("properties"), schema.get("additionalProperties")
        for key in schema.get("required", []):
            assert key in value, f"{path}: required key {key} is missing"
        for key, item in value.items():
            if props is not None and key in props:
                check_schema(item, props[key], f"{path}.{key}")
            elif isinstance(extra, dict):
                check_schema(item, extra, f"{path}.{key}")
            else:
                assert props is None and extra is None, f"{path}: unknown key {key}"
                pytest.fail(f"{path}: an object the stored schema leaves open ({key}); check it with a model")
    if kind == "array":
        for i, item in enumerate(value):
            check_schema(item, schema["items"], f"{path}[{i}]")


def check_custom(obj: dict[str, Any]) -> None:
    crd = CRDS["kinds"][obj["kind"]]
    assert obj["apiVersion"] == f"{crd['group']}/{crd['version']}"
    strict_model(obj["metadata"], "V1ObjectMeta")
    check_schema({k: v for k, v in obj.items() if k != "metadata"}, crd["schema"], obj["kind"])


def by_kind(objects: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [o for o in objects if o["kind"] == kind]


def one(objects: list[dict[str, Any]], kind: str) -> dict[str, Any]:
    (found,) = by_kind(objects, kind)
    return found


def pod_spec(objects: list[dict[str, Any]]) -> dict[str, Any]:
    for kind, path in (("Pod", ("spec",)), ("Sandbox", ("spec", "podTemplate", "spec"))):
        for obj in by_kind(objects, kind):
            node = obj
            for key in path:
                node = node[key]
            return node
    return one(objects, "SandboxTemplate")["spec"]["podTemplate"]["spec"]


def containers(spec: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {c["name"]: c for c in spec["initContainers"] + spec["containers"]}


# -- golden files and the official models ---------------------------------------------------------


@pytest.mark.parametrize("via", k8s.VIAS)
def test_golden(plan: BottlePlan, via: k8s.Via) -> None:
    check_golden(f"kubernetes-{via}.yaml", k8s.render_kubernetes(plan, via=via))


@pytest.mark.parametrize("via", k8s.VIAS)
def test_core_objects_are_what_the_kubernetes_client_reads(plan: BottlePlan, via: k8s.Via) -> None:
    objects = k8s.render_kubernetes(plan, via=via)
    core = [o for o in objects if o["kind"] in CORE_MODELS]
    assert {o["kind"] for o in core} >= {"Namespace", "ServiceAccount", "Secret", "ConfigMap", "NetworkPolicy"}
    for obj in core:
        strict_model(obj, CORE_MODELS[obj["kind"]])
    # The filled Secret too: its data are base64 strings.
    filled = k8s.fill_values(objects, secret=_secret_values(plan), config=_config_values())
    strict_model(one(filled, "Secret"), "V1Secret")


@pytest.mark.parametrize("via", ["sandbox", "warm-pool"])
def test_agent_sandbox_objects_follow_its_crds(plan: BottlePlan, via: k8s.Via) -> None:
    assert f"agent-sandbox {k8s.AGENT_SANDBOX_VERSION} " in CRDS["source"], (
        "the renderer follows other CRDs than stored"
    )
    custom = [o for o in k8s.render_kubernetes(plan, via=via) if o["kind"] in CRDS["kinds"]]
    want = {"sandbox": {"Sandbox"}, "warm-pool": {"SandboxTemplate", "SandboxWarmPool", "SandboxClaim"}}[via]
    assert {o["kind"] for o in custom} == want
    for obj in custom:
        check_custom(obj)


def test_the_checks_catch_a_wrong_field_or_type(plan: BottlePlan) -> None:
    """Each check fails on what it is there for: an unknown key, a wrong type, a missing key."""
    objects = k8s.render_kubernetes(plan, via="pod")
    pod = one(objects, "Pod")
    misspelt = copy.deepcopy(pod)
    misspelt["spec"]["containers"][0]["securityContexts"] = misspelt["spec"]["containers"][0].pop("securityContext")
    with pytest.raises(AssertionError, match="securityContext"):
        strict_model(misspelt, "V1Pod")
    wrong_type = copy.deepcopy(pod)
    wrong_type["spec"]["containers"][0]["securityContext"]["runAsUser"] = "1000"
    with pytest.raises(ValidationError, match="runAsUser"):
        strict_model(wrong_type, "V1Pod")
    policy = copy.deepcopy(one(objects, "NetworkPolicy"))
    policy["spec"]["egress"][0]["port"] = 53
    with pytest.raises(AssertionError, match="port"):
        strict_model(policy, "V1NetworkPolicy")
    sandboxes = k8s.render_kubernetes(plan, via="warm-pool")
    pool = copy.deepcopy(one(sandboxes, "SandboxWarmPool"))
    pool["spec"]["templateRef"] = pool["spec"].pop("sandboxTemplateRef")
    with pytest.raises(AssertionError, match="sandboxTemplateRef|templateRef"):
        check_custom(pool)
    template = copy.deepcopy(one(sandboxes, "SandboxTemplate"))
    template["spec"]["networkPolicyManagement"] = "None"
    with pytest.raises(AssertionError, match="networkPolicyManagement"):
        check_custom(template)
    template = copy.deepcopy(one(sandboxes, "SandboxTemplate"))
    template["spec"]["podTemplate"]["spec"]["initContainers"][2]["restartPolicys"] = "Always"
    with pytest.raises(AssertionError, match="restartPolicys"):
        check_custom(template)


# -- the bottle's invariants, as the docker bottle has them ---------------------------------------


@pytest.mark.parametrize("via", k8s.VIAS)
def test_secrets_reach_the_bundle_only_and_never_as_env(plan: BottlePlan, via: k8s.Via) -> None:
    objects = k8s.render_kubernetes(plan, via=via)
    spec = pod_spec(objects)
    secret = one(objects, "Secret")
    assert set(secret["data"]) == set(plan.secret_env_names) and secret["immutable"]
    secret_volumes = {v["name"] for v in spec["volumes"] if "secret" in v}
    assert {v["secret"]["secretName"] for v in spec["volumes"] if "secret" in v} == {secret["metadata"]["name"]}
    for name, container in containers(spec).items():
        mounted = {m["name"] for m in container.get("volumeMounts", [])}
        if name not in BUNDLE_CONTAINERS:
            assert not mounted & secret_volumes, f"{name} mounts the bundle's Secret"
        assert "envFrom" not in container
        for var in container.get("env", []):
            assert "secretKeyRef" not in var.get("valueFrom", {}), f"{name} has {var['name']} from a Secret"
    agent_env = {v["name"]: v.get("value") for v in containers(spec)["agent"]["env"]}
    for name in plan.secret_env_names:
        assert agent_env[name] == placeholder(name)


@pytest.mark.parametrize("via", k8s.VIAS)
def test_containers_are_hardened_as_the_docker_bottle(plan: BottlePlan, via: k8s.Via) -> None:
    spec = pod_spec(k8s.render_kubernetes(plan, via=via))
    compose = render_compose(plan, host_uid=1000, host_gid=1000)["services"]
    by_name = containers(spec)
    # bottle-net first, the agent's home, the native sidecar, then the agent.
    assert [c["name"] for c in spec["initContainers"]] == ["bottle-net", "agent-home", "sidecars"]
    assert by_name["sidecars"]["restartPolicy"] == "Always" and "readinessProbe" in by_name["sidecars"]
    assert [c["name"] for c in spec["containers"]] == ["agent"]
    for name, container in by_name.items():
        sc = container["securityContext"]
        assert sc["capabilities"]["drop"] == ["ALL"] and sc["allowPrivilegeEscalation"] is False
        assert sc["capabilities"].get("add", []) == (["NET_ADMIN", "NET_RAW"] if name == "bottle-net" else [])
        assert (sc["runAsUser"] == 0) == (name == "bottle-net")
        assert (sc["runAsUser"] == 1000) == (name in {"agent", "agent-home"})
    assert by_name["agent"]["securityContext"]["runAsUser"] == 1000 == int(compose["agent"]["user"].split(":")[0])
    assert by_name["sidecars"]["securityContext"]["runAsUser"] == k8s.BUNDLE_UID != 1000
    assert by_name["sidecars"]["securityContext"]["readOnlyRootFilesystem"] is True
    assert spec["automountServiceAccountToken"] is False and spec["shareProcessNamespace"] is False
    assert spec["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    # The same images and limits as the docker bottle.
    assert by_name["agent"]["image"] == by_name["agent-home"]["image"] == compose["agent"]["image"]
    assert by_name["sidecars"]["image"] == compose["sidecars"]["image"]
    assert by_name["agent"]["resources"]["limits"] == {"cpu": "1.5", "memory": "2048Mi"}
    assert compose["agent"]["cpus"] == 1.5 and compose["agent"]["mem_limit"] == "2048m"
    assert by_name["sidecars"]["resources"]["limits"]["memory"] == compose["sidecars"]["mem_limit"].replace("m", "Mi")
    # The agent's home is its own volume, its CA read-only; nothing of the bundle's state.
    assert {m["name"]: m.get("readOnly", False) for m in by_name["agent"]["volumeMounts"]} == {
        "work": False,
        "ca": True,
    }


@pytest.mark.parametrize("via", k8s.VIAS)
def test_the_bundle_gets_what_the_docker_bundle_gets(plan: BottlePlan, via: k8s.Via) -> None:
    objects = k8s.render_kubernetes(plan, via=via)
    spec = pod_spec(objects)
    compose = render_compose(plan, host_uid=1000, host_gid=1000)["services"]
    env = {v["name"]: v.get("value") for v in containers(spec)["sidecars"]["env"]}
    docker_env = {k: v for k, v in compose["sidecars"]["environment"].items() if v is not None}
    assert {k: env[k] for k in docker_env if k != "BOTTLE_SLUG"} == {
        k: v for k, v in docker_env.items() if k != "BOTTLE_SLUG"
    }
    assert not set(plan.secret_env_names) & set(env), "a credential's name is in the bundle's environment"
    # Init waits for the host's seed, and reads the credentials from the Secret's files.
    assert env["BOTTLE_SEED_MARK"] == "/state/.seeded" and env["BOTTLE_SECRETS_DIR"] == k8s.SECRETS_MOUNT
    mounts = {m["name"]: m["mountPath"] for m in containers(spec)["sidecars"]["volumeMounts"]}
    assert mounts["state"] == "/state" and mounts["bundle-secrets"] == k8s.SECRETS_MOUNT
    # The agent's names for the bundle, all on the Pod's loopback.
    aliases = compose["sidecars"]["networks"]["internal"]["aliases"]
    assert spec["hostAliases"] == [{"ip": "127.0.0.1", "hostnames": aliases}]
    # The policy and the CA's key are seeded through the control command, never API objects.
    text = json.dumps(objects)
    assert "routes.yaml" not in text and "mitmproxy-ca" not in text and "api.example.com" not in text


@pytest.mark.parametrize("via", k8s.VIAS)
def test_labels_are_the_docker_bottles(plan: BottlePlan, via: k8s.Via) -> None:
    objects = k8s.render_kubernetes(plan, via=via)
    docker_labels = render_compose(plan, host_uid=1000, host_gid=1000)["services"]["agent"]["labels"]
    bottle = one(objects, {"pod": "Pod", "sandbox": "Sandbox", "warm-pool": "SandboxClaim"}[via])
    meta = bottle["metadata"]
    for key in ("dev.bottle-tui.managed", "dev.bottle-tui.slug", "dev.bottle-tui.agent", "dev.bottle-tui.bottle"):
        assert meta["labels"][key] == docker_labels[key]
    assert meta["labels"]["dev.bottle-tui.backend"] == "kubernetes"
    # What a label value cannot hold (a path, a time with colons) is an annotation.
    for key in ("dev.bottle-tui.started-at", "dev.bottle-tui.home"):
        assert meta["annotations"][key] == docker_labels[key]
    label_value = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")
    for obj in objects:
        for value in obj["metadata"].get("labels", {}).values():
            assert len(value) <= 63 and label_value.match(value), f"{obj['kind']}: label value {value!r}"


@pytest.mark.parametrize("via", k8s.VIAS)
def test_network_policy_lets_nothing_in_and_the_bundle_out(plan: BottlePlan, via: k8s.Via) -> None:
    objects = k8s.render_kubernetes(plan, via=via)
    policy = one(objects, "NetworkPolicy")["spec"]
    assert policy["policyTypes"] == ["Ingress", "Egress"] and policy["ingress"] == []
    dns, out = policy["egress"]
    assert {p["port"] for p in dns["ports"]} == {53}
    assert [p["port"] for p in out["ports"]] == [80, 443]  # the routes' ports and the git upstream's
    for block in out["to"]:
        assert "10.0.0.0/8" in block["ipBlock"]["except"] or "fc00::/7" in block["ipBlock"]["except"]
    pod_meta = {
        "pod": lambda: one(objects, "Pod")["metadata"],
        "sandbox": lambda: one(objects, "Sandbox")["spec"]["podTemplate"]["metadata"],
        "warm-pool": lambda: one(objects, "SandboxTemplate")["spec"]["podTemplate"]["metadata"],
    }[via]()
    assert policy["podSelector"]["matchLabels"].items() <= pod_meta["labels"].items()


def test_routes_without_ports_give_the_bundle_dns_only(plan: BottlePlan) -> None:
    bare = dataclasses.replace(plan, bottle=dataclasses.replace(plan.bottle, routes=(), git=None))
    objects = k8s.render_kubernetes(bare)
    policy = one(objects, "NetworkPolicy")["spec"]
    assert len(policy["egress"]) == 1 and {p["port"] for p in policy["egress"][0]["ports"]} == {53}
    # No credential to inject: no Secret, and nothing of one in the Pod.
    assert not by_kind(objects, "Secret") and "bundle-secrets" not in json.dumps(objects)
    strict_model(one(objects, "Pod"), "V1Pod")


def test_an_upstream_port_opens_that_port(plan: BottlePlan) -> None:
    git = dataclasses.replace(plan.bottle.git, upstream="https://git.example.com:8443/org/repo.git")
    bottle = dataclasses.replace(plan.bottle, git=git)
    policy = one(k8s.render_kubernetes(dataclasses.replace(plan, bottle=bottle)), "NetworkPolicy")["spec"]
    assert [p["port"] for p in policy["egress"][1]["ports"]] == [80, 443, 8443]


def test_a_local_upstream_or_an_unknown_way_is_one_line(plan: BottlePlan, tmp_path: Path) -> None:
    git = GitSpec(upstream=str(tmp_path), branch="main", credentials_env=None, local=tmp_path, review=True)
    local = dataclasses.replace(plan, bottle=dataclasses.replace(plan.bottle, git=git))
    with pytest.raises(BottleError, match=r"git.upstream: a repository on this machine") as err:
        k8s.render_kubernetes(local)
    assert "\n" not in str(err.value)
    with pytest.raises(BottleError, match="'deployment' is not a way"):
        k8s.render_kubernetes(plan, via="deployment")  # type: ignore[arg-type]
    with pytest.raises(BottleError, match="a warm pool of -1 Pods"):
        k8s.render_kubernetes(plan, via="warm-pool", warm=-1)


def test_warm_pool_pods_hold_nothing_of_one_bottle(plan: BottlePlan) -> None:
    """A pool's Pods are made before their bottle: the template names the agent, the claim the slug."""
    objects = k8s.render_kubernetes(plan, via="warm-pool", warm=3)
    template = one(objects, "SandboxTemplate")
    text = json.dumps([o for o in objects if o["kind"] != "SandboxClaim"])
    assert plan.slug not in text and plan.started_at not in text
    assert template["spec"]["networkPolicyManagement"] == "Unmanaged"
    assert one(objects, "SandboxWarmPool")["spec"]["replicas"] == 3
    claim = one(objects, "SandboxClaim")
    assert claim["metadata"]["name"] == plan.slug
    assert claim["spec"]["additionalPodMetadata"]["labels"] == {"dev.bottle-tui.slug": plan.slug}
    assert "env" not in claim["spec"] and "volumeClaimTemplates" not in claim["spec"]


def test_one_pod_spec_three_ways(plan: BottlePlan) -> None:
    """A Sandbox's and a template's Pod are the plain Pod, less the claims' volumes their
    controller adds under the same names."""
    pod = pod_spec(k8s.render_kubernetes(plan, via="pod"))
    sandbox = one(k8s.render_kubernetes(plan, via="sandbox"), "Sandbox")["spec"]
    claims = {v["name"] for v in pod["volumes"] if "persistentVolumeClaim" in v}
    assert claims == {t["metadata"]["name"] for t in sandbox["volumeClaimTemplates"]} == {"work", "state"}
    assert sandbox["podTemplate"]["spec"] == {**pod, "volumes": [v for v in pod["volumes"] if v["name"] not in claims]}
    warm = one(k8s.render_kubernetes(plan, via="warm-pool"), "SandboxTemplate")["spec"]["podTemplate"]["spec"]
    assert warm["initContainers"] == sandbox["podTemplate"]["spec"]["initContainers"]


# -- the values the plan does not hold ------------------------------------------------------------


def _secret_values(plan: BottlePlan) -> dict[str, str]:
    return {n: f"real-value-of-{n}" for n in plan.secret_env_names}


def _config_values() -> dict[str, str]:
    return {"egress-ca.pem": "CERT"}


def test_fill_values_fills_every_empty_key_and_nothing_else(plan: BottlePlan) -> None:
    objects = k8s.render_kubernetes(plan)
    rendered = json.dumps(objects)
    filled = k8s.fill_values(objects, secret=_secret_values(plan), config=_config_values())
    assert json.dumps(objects) == rendered, "fill_values changed the rendered objects"
    data = one(filled, "Secret")["data"]
    assert base64.b64decode(data["EXAMPLE_KEY"]).decode() == "real-value-of-EXAMPLE_KEY"
    assert one(filled, "ConfigMap")["data"] == {"egress-ca.pem": "CERT"}
    assert "real-value-of" not in rendered
    missing = {k: v for k, v in _secret_values(plan).items() if k != "GIT_TOKEN"}
    with pytest.raises(BottleError, match="needs a value for GIT_TOKEN"):
        k8s.fill_values(objects, secret=missing, config=_config_values())
    with pytest.raises(BottleError, match="no Secret of the bottle has a key OTHER"):
        k8s.fill_values(objects, secret={**_secret_values(plan), "OTHER": "x"}, config=_config_values())


# -- the scripts the Pod runs, run here ------------------------------------------------------------


def _rebase(args: list[str], roots: dict[str, Path]) -> list[str]:
    out = []
    for arg in args:
        for prefix, root in roots.items():
            if arg == prefix or arg.startswith(prefix + "/"):
                arg = str(root) + arg[len(prefix) :]
                break
        out.append(arg)
    return out


def test_agent_home_gets_the_images_home_once(plan: BottlePlan, tmp_path: Path) -> None:
    cmd = containers(pod_spec(k8s.render_kubernetes(plan)))["agent-home"]["command"]
    image_home, claim = tmp_path / "image-home", tmp_path / "claim"
    (image_home / "work").mkdir(parents=True)
    (image_home / ".claude").mkdir()
    (image_home / ".profile").write_text("image\n")
    claim.mkdir()
    argv = _rebase(cmd, {"/home/agent": image_home, k8s.AGENT_HOME_MOUNT: claim})
    subprocess.run(argv, check=True)
    assert sorted(p.name for p in claim.iterdir()) == [".claude", ".profile", "work"]
    # A second start (a resumed bottle) keeps what the agent changed.
    (claim / ".profile").write_text("the agent's\n")
    (claim / "work" / "file").write_text("work\n")
    subprocess.run(argv, check=True)
    assert (claim / ".profile").read_text() == "the agent's\n" and (claim / "work" / "file").exists()


NET_PROBE = r"""
import socket, sys
def attempt(host, port):
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    s = socket.socket(family, socket.SOCK_STREAM)
    s.settimeout(3.0)  # an IPv6 refusal may come with the first retransmission (1 s)
    try:
        s.connect((host, port))
        return "connected"
    except ConnectionRefusedError:
        return "refused"
    except OSError as e:
        return "timeout" if isinstance(e, TimeoutError) else type(e).__name__
    finally:
        s.close()
print(" ".join(attempt(h, int(p)) for h, p in (a.rsplit(":", 1) for a in sys.argv[1:])))
"""


def _unavailable(what: str, *tools: str) -> str | None:
    """Why ``what`` cannot run here (it needs root and ``tools``), or None."""
    if os.geteuid() != 0:
        return f"{what} needs root, to run in a namespace of the test's own"
    for tool in tools:
        if not shutil.which(tool):
            return f"{what} needs {tool}, which this machine does not have"
    return None


NET_UNAVAILABLE = _unavailable("bottle-net's rules", "unshare", "iptables", "ip6tables", "ip", "setpriv")
INIT_UNAVAILABLE = _unavailable("the agent's init as PID 1", "unshare", "nsenter")


@pytest.mark.skipif(NET_UNAVAILABLE is not None, reason=str(NET_UNAVAILABLE))
def test_bottle_net_lets_the_agent_out_through_loopback_only(plan: BottlePlan) -> None:
    """The Pod's bottle-net script, run in a fresh network namespace: the agent's uid reaches a
    server on loopback and nothing else (refused at once), while another uid's packets still
    leave (to a neighbour that never answers: a timeout). IPv4 and IPv6."""
    net = containers(pod_spec(k8s.render_kubernetes(plan)))["bottle-net"]["command"]
    uid = net[-1]
    python = shutil.which("python3", path="/usr/bin:/bin") or sys.executable
    probe = f"setpriv --reuid {uid} --regid {uid} --clear-groups {python} -c '{NET_PROBE}'"
    script = f"""
set -eu
ip link set lo up
ip link add d0 type veth peer name d1
ip link set d0 up
ip link set d1 up
ip addr add 10.250.0.2/24 dev d0
ip -6 addr add fd00:250::2/64 dev d0 nodad
{python} -c 'import socket,time
a=socket.socket(); a.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1); a.bind(("127.0.0.1", 18418)); a.listen()
b=socket.socket(socket.AF_INET6); b.bind(("::1", 18418)); b.listen()
time.sleep(30)' &
server=$!
sleep 0.3
"$@"
echo agent: $({probe} 127.0.0.1:18418 [::1]:18418 10.250.0.9:443 [fd00:250::9]:443 2>&1 | tr -d '[]')
echo root: $({python} -c '{NET_PROBE}' 10.250.0.9:443 2>&1)
kill $server
"""
    # The probe's addresses: brackets only for the shell; the probe splits on the last colon.
    script = script.replace("[::1]:18418", "::1:18418").replace("[fd00:250::9]:443", "fd00:250::9:443")
    out = subprocess.run(
        ["unshare", "--net", "sh", "-c", script, "net-test", *net], capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0, out.stderr
    lines = dict(line.split(": ", 1) for line in out.stdout.splitlines() if ": " in line)
    assert lines["agent"] == "connected connected refused refused", out.stdout + out.stderr
    assert lines["root"] == "timeout", out.stdout + out.stderr


@pytest.mark.skipif(INIT_UNAVAILABLE is not None, reason=str(INIT_UNAVAILABLE))
def test_the_agents_init_reaps_orphans_and_ends_on_term(plan: BottlePlan) -> None:
    """The agent's command as PID 1 of a PID namespace of its own (as in its container): an
    orphan of an exec session (a process whose parent left) is reaped, and TERM ends it at once."""
    cmd = containers(pod_spec(k8s.render_kubernetes(plan)))["agent"]["command"]
    python = shutil.which("python3", path="/usr/bin:/bin") or sys.executable
    init = subprocess.Popen(["unshare", "--pid", "--fork", "--mount-proc", python, *cmd[1:]])
    try:
        deadline = time.monotonic() + 10
        pid1 = None
        while pid1 is None and time.monotonic() < deadline:
            kids = Path(f"/proc/{init.pid}/task/{init.pid}/children").read_text().split()
            pid1 = int(kids[0]) if kids else None
            time.sleep(0.05)
        assert pid1 is not None, "the init did not start"
        # An exec session that leaves a background child behind: the child's parent exits at once.
        subprocess.run(["nsenter", f"--pid=/proc/{pid1}/ns/pid", "--", "sh", "-c", "sleep 0.3 & exit 0"], check=True)
        time.sleep(1.5)
        states = []
        for child in Path(f"/proc/{pid1}/task/{pid1}/children").read_text().split():
            states.append(Path(f"/proc/{child}/stat").read_text().split(")")[-1].split()[0])
        assert "Z" not in states, f"zombies left under the agent's init: {states}"
        t0 = time.monotonic()
        os.kill(pid1, signal.SIGTERM)
        init.wait(timeout=5)
        assert time.monotonic() - t0 < 2 and init.returncode == 0
    finally:
        if init.poll() is None:
            init.kill()
            init.wait()
