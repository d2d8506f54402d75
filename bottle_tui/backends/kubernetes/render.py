"""Pure renderers from a BottlePlan to Kubernetes objects (dicts, as `kubectl apply` takes them).

One bottle is one Pod: the sidecar bundle is a native sidecar (an init container with
``restartPolicy: Always``, started before the agent), the agent its one container. The
containers of a Pod share its network namespace, so no NetworkPolicy can tell the agent from the
bundle: the Pod's NetworkPolicy is the bundle's way out (DNS and the routes' ports outside the
cluster, nothing in), and the agent's "no route out" is made inside the Pod, before anything else
starts, by ``bottle-net``: packets of the agent's uid leave only through loopback, where the
bundle's daemons listen. That holds whatever the cluster's CNI does with NetworkPolicies. The
other init container, ``agent-home``, puts the image's home onto the agent's empty claim.

The bundle's state is a claim of its own, seeded as a swarm bottle's volume is: the bundle's init
starts no daemon before the seed mark exists, and the host writes the sidecar folders it renders
for a docker bottle (policy, gate and supervise settings, the egress CA) through the bundle's
control command (``bottle_control seed``, a tar on stdin) with ``kubectl exec``, so the CA's key
is never an object of the API. A restarted Pod finds the mark, and the policy and queue of its
last run.

Three ways to run the same Pod (``via``):

- ``pod``: a Pod and the PersistentVolumeClaims of its two volumes, made by the backend.
- ``sandbox``: an agent-sandbox ``Sandbox`` (one per bottle): its controller makes the Pod and
  the claims from ``volumeClaimTemplates`` (named ``<template>-<sandbox>``), and can suspend it.
- ``warm-pool``: a ``SandboxTemplate`` per agent (its bottle file, its name), a
  ``SandboxWarmPool`` of Pods of it waiting for their seed, and the bottle's ``SandboxClaim``,
  which adopts one. The Pods exist before the bottle does, so what their spec holds is the
  agent's, not the bottle's (the Secret, the CA certificate); the rest comes with the seed.

The API types followed are kubernetes-sigs/agent-sandbox v0.5.6 (``agents.x-k8s.io/v1beta1``
and ``extensions.agents.x-k8s.io/v1beta1``, the storage versions), read in its api/ and
extensions/api/ Go types and k8s/crds/.

Values the plan does not hold (credentials, the egress CA's certificate) are rendered as empty
keys and filled in by ``fill_values`` when the objects are applied, so a rendered object never
carries a credential and the golden files show every key.
"""

from __future__ import annotations

import base64
import copy
from collections.abc import Mapping
from typing import Any, Literal
from urllib.parse import urlsplit

from bottle_contract import layout, workers

from ...errors import BottleError
from ...plan import AGENT_HOME, CA_CERT_NAME, CA_MOUNT, GIT_GATE_HOST, WORKDIR, BottlePlan
from ..docker import labels
from ..docker.compose import AGENT_USER, SIDECAR_ALIASES, SIDECARS_MEMORY

Via = Literal["pod", "sandbox", "warm-pool"]
VIAS: tuple[Via, ...] = ("pod", "sandbox", "warm-pool")

AGENT_SANDBOX_VERSION = "v0.5.6"
SANDBOX_API = "agents.x-k8s.io/v1beta1"
EXTENSIONS_API = "extensions.agents.x-k8s.io/v1beta1"

NAMESPACE = "bottle-tui"
SERVICE_ACCOUNT = "bottle-tui-bottle"
BACKEND = "kubernetes"
TEMPLATE_LABEL = "dev.bottle-tui.template"
MANAGED_BY = {"app.kubernetes.io/managed-by": "bottle-tui"}

AGENT_UID, AGENT_GID = (int(part) for part in AGENT_USER.split(":"))
# The bundle has no operator's folder to write into here (docker runs it as the operator): it
# runs as the swarm bundle's uid, never the agent's.
BUNDLE_UID = BUNDLE_GID = 1001
# Where the bundle sees the bottle's Secret, one file per credential named by its env var, and
# init reads them (BOTTLE_SECRETS_DIR): the swarm bundle's Docker secrets' folder. Never in any
# environment, never in the agent.
SECRETS_MOUNT = layout.SECRETS_DIR
# Init starts no daemon before this exists on the state volume; bottle_control seed writes it.
SEED_MARK = f"{layout.BUNDLE_STATE}/{layout.SEEDED}"
# The volumes' sizes: a claim must name one. The state holds the bounded logs (layout.Cap), the
# queue and the gate's mirror of the upstream, which is the part that grows with the repository.
WORK_STORAGE = "20Gi"
STATE_STORAGE = "4Gi"
# Kubernetes has no `init: true`: the agent's PID 1 reaps what `kubectl exec` sessions leave
# behind and exits on TERM (docker's init did both), within the 3 s grace (compose STOP_GRACE).
AGENT_INIT = (
    "import os, signal, time\n"
    "signal.signal(signal.SIGTERM, lambda *_: os._exit(0))\n"
    "while True:\n"
    "    try:\n"
    "        os.wait()\n"
    "    except ChildProcessError:\n"
    "        time.sleep(1)\n"
)
STOP_GRACE_SECONDS = 3
# bottle-net: in the Pod's network namespace, before any other container starts, packets of the
# agent's uid may leave through loopback only (where the bundle listens); anything else it sends
# is refused, IPv4 and IPv6 (unless the Pod has no IPv6 at all). It fails, and so does the Pod,
# when a rule cannot be installed. It needs NET_ADMIN (and NET_RAW for iptables' own socket),
# runs as root and exits; no other container has a capability.
NET_SCRIPT = r"""
set -eu
uid=$1
for t in iptables ip6tables; do
  if [ "$t" = ip6tables ] && [ ! -e /proc/net/if_inet6 ]; then continue; fi
  "$t" -w -A OUTPUT -m owner --uid-owner "$uid" -o lo -j ACCEPT
  "$t" -w -A OUTPUT -m owner --uid-owner "$uid" -j REJECT
done
"""
# agent-home: a claim starts empty, where docker fills a new volume with what the image holds at
# its mount point; so, on the first start only, the agent's home on its claim gets the image's
# /home/agent (its work folder, ~/.claude), copied by the agent's uid in the agent's image.
AGENT_HOME_SCRIPT = r"""
set -eu
[ -e "$2/work" ] || cp -a "$1/." "$2/"
"""
AGENT_HOME_MOUNT = "/agent-home"
# The addresses the bundle may reach for its way out: anything but the cluster's and the
# private ranges (pods, services, nodes, the cloud's metadata address).
PRIVATE_V4 = ("10.0.0.0/8", "100.64.0.0/10", "169.254.0.0/16", "172.16.0.0/12", "192.168.0.0/16")
PRIVATE_V6 = ("fc00::/7", "fe80::/10")


def _names(plan: BottlePlan, via: Via) -> dict[str, str]:
    """Object names: per bottle (its slug, a DNS label) or, for a warm pool, per agent (an agent
    names one bottle file: its pool is that file's Pods with the agent's name in their env)."""
    template = f"bottle-tui-{plan.agent.name}"
    owner = template if via == "warm-pool" else plan.slug
    return {
        "owner": owner,
        "pod": plan.slug,
        "template": template,
        "secret": f"{owner}-bundle",
        "ca": f"{owner}-ca",
        "policy": owner,
    }


def _labels(plan: BottlePlan, via: Via) -> dict[str, str]:
    """What discovery selects on (label values must be DNS-label-like: no paths, no times)."""
    common = {
        labels.MANAGED: "true",
        labels.BACKEND: BACKEND,
        labels.BOTTLE: plan.bottle.name,
        labels.AGENT: plan.agent.name,
        TEMPLATE_LABEL: _names(plan, via)["template"],
        **MANAGED_BY,
    }
    if via == "warm-pool":
        return common  # the claim adds the slug to the Pod it adopts (additionalPodMetadata)
    return {**common, **_bottle_labels(plan)}


def _bottle_labels(plan: BottlePlan) -> dict[str, str]:
    return {labels.SLUG: plan.slug}


def _annotations(plan: BottlePlan) -> dict[str, str]:
    return {labels.STARTED_AT: plan.started_at, labels.HOME: str(plan.home)}


def _meta(name: str, plan: BottlePlan, via: Via, *, namespaced: bool = True) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name}
    if namespaced:
        meta["namespace"] = NAMESPACE
    meta["labels"] = _labels(plan, via)
    return meta


def _hardened(uid: int, gid: int) -> dict[str, Any]:
    return {
        "runAsUser": uid,
        "runAsGroup": gid,
        "runAsNonRoot": True,
        "allowPrivilegeEscalation": False,
        "capabilities": {"drop": ["ALL"]},
    }


def _env(values: Mapping[str, str]) -> list[dict[str, Any]]:
    env: list[dict[str, Any]] = [{"name": k, "value": v} for k, v in sorted(values.items())]
    # The Pod's name is the slug (a warm pool's Pod: the Sandbox's name, which the claim records).
    env.append({"name": "BOTTLE_SLUG", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}})
    return env


def _ready_probe(plan: BottlePlan) -> dict[str, Any]:
    """The Pod is Ready when the bundle's daemons wrote their ready files (after the seed), so
    the Pod's Ready condition, and a Sandbox's, is the bundle's; a pool's Pods wait unready until
    a claim's seed (agent-sandbox adopts an unready one when no ready one is left)."""
    ready = [layout.bundle_path(layout.EGRESS, layout.READY)]
    if plan.supervise_url:
        ready.append(layout.bundle_path(layout.SUPERVISE, layout.READY))
    test = " && ".join(f"test -e {path}" for path in ready)
    return {"exec": {"command": ["sh", "-c", test]}, "periodSeconds": 1}


def _pod_spec(plan: BottlePlan, via: Via) -> dict[str, Any]:
    names = _names(plan, via)
    res = plan.bottle.resources
    bundle_image = plan.images["sidecars"]
    has_secret = bool(plan.secret_env_names)
    state_mount = {"name": "state", "mountPath": layout.BUNDLE_STATE}
    secrets_mount = {"name": "bundle-secrets", "mountPath": SECRETS_MOUNT, "readOnly": True}
    net = {
        "name": "bottle-net",
        "image": bundle_image,
        "command": ["sh", "-c", NET_SCRIPT, "bottle-net", str(AGENT_UID)],
        "securityContext": {
            "runAsUser": 0,
            "runAsNonRoot": False,
            "allowPrivilegeEscalation": False,
            "capabilities": {"drop": ["ALL"], "add": ["NET_ADMIN", "NET_RAW"]},
        },
        "resources": {"limits": {"cpu": "100m", "memory": "64Mi"}},
    }
    home = {
        "name": "agent-home",
        "image": plan.images["agent"],
        "command": ["sh", "-c", AGENT_HOME_SCRIPT, "agent-home", AGENT_HOME, AGENT_HOME_MOUNT],
        "securityContext": _hardened(AGENT_UID, AGENT_GID),
        "volumeMounts": [{"name": "work", "mountPath": AGENT_HOME_MOUNT}],
        "resources": {"limits": {"cpu": "100m", "memory": "64Mi"}},
    }
    sidecars = {
        "name": "sidecars",
        "image": bundle_image,
        # A native sidecar: started before the agent, restarted when it exits, ended after it.
        "restartPolicy": "Always",
        "env": _env(
            {
                "BOTTLE_DAEMONS": ",".join(plan.daemons),
                "BOTTLE_NAME": plan.bottle.name,
                "HOME": "/tmp",
                # bottle_init gives each daemon only the secrets its variable lists; their values
                # are the files of the Secret under BOTTLE_SECRETS_DIR, named by the variable.
                "BOTTLE_EGRESS_SECRETS": ",".join(plan.daemon_secrets["egress"]),
                # How many egress workers share the proxy port ("auto": init counts the bundle's CPUs).
                workers.WORKERS_ENV: str(plan.bottle.egress_workers),
                "BOTTLE_GIT_GATE_SECRETS": ",".join(plan.daemon_secrets["git-gate"]),
                "BOTTLE_SECRETS_DIR": SECRETS_MOUNT,
                "BOTTLE_SEED_MARK": SEED_MARK,
            }
        ),
        "securityContext": _hardened(BUNDLE_UID, BUNDLE_GID) | {"readOnlyRootFilesystem": True},
        "volumeMounts": [
            state_mount,
            *([secrets_mount] if has_secret else []),
            {"name": "bundle-tmp", "mountPath": "/tmp"},
            {"name": "bundle-init-run", "mountPath": "/run/bottle-init"},
        ],
        "readinessProbe": _ready_probe(plan),
        "resources": {"limits": {"memory": SIDECARS_MEMORY.removesuffix("m") + "Mi"}},
    }
    agent_env = {k: v for k, v in plan.agent_env.items() if k != "BOTTLE_SLUG"}
    agent = {
        "name": "agent",
        "image": plan.images["agent"],
        "command": ["python3", "-c", AGENT_INIT],
        "workingDir": WORKDIR,
        "env": _env(agent_env),
        "securityContext": _hardened(AGENT_UID, AGENT_GID),
        "volumeMounts": [
            {"name": "work", "mountPath": AGENT_HOME},
            {"name": "ca", "mountPath": CA_MOUNT, "readOnly": True},
        ],
        "resources": {"limits": {"cpu": f"{res.cpus:g}", "memory": f"{res.memory_mib}Mi"}},
    }
    memory_dir = {"emptyDir": {"medium": "Memory", "sizeLimit": "64Mi"}}
    volumes: list[dict[str, Any]] = [
        *(
            [{"name": "bundle-secrets", "secret": {"secretName": names["secret"], "defaultMode": 0o440}}]
            if has_secret
            else []
        ),
        {"name": "ca", "configMap": {"name": names["ca"], "defaultMode": 0o444}},
        {"name": "bundle-tmp", **copy.deepcopy(memory_dir)},
        {"name": "bundle-init-run", **copy.deepcopy(memory_dir)},
    ]
    if via == "pod":
        # A Sandbox's controller adds these from its volumeClaimTemplates, under the same names.
        volumes += [
            {"name": "work", "persistentVolumeClaim": {"claimName": f"work-{plan.slug}"}},
            {"name": "state", "persistentVolumeClaim": {"claimName": f"state-{plan.slug}"}},
        ]
    aliases = (
        list(SIDECAR_ALIASES)
        + ([GIT_GATE_HOST] if plan.bottle.git else [])
        + (["supervise"] if plan.supervise_url else [])
    )
    return {
        "serviceAccountName": SERVICE_ACCOUNT,
        "automountServiceAccountToken": False,
        "enableServiceLinks": False,
        "shareProcessNamespace": False,
        "restartPolicy": "Never",
        "terminationGracePeriodSeconds": STOP_GRACE_SECONDS,
        # The bundle's names, as the agent and the daemons use them: all on the Pod's loopback.
        "hostAliases": [{"ip": "127.0.0.1", "hostnames": aliases}],
        "securityContext": {
            "seccompProfile": {"type": "RuntimeDefault"},
            # The agent's volume is the agent's; the bundle reads the Secret's files by this group too.
            "fsGroup": AGENT_GID,
            "fsGroupChangePolicy": "OnRootMismatch",
        },
        # bottle-net first: nothing runs in the Pod's network before the agent's rules are in place.
        "initContainers": [net, home, sidecars],
        "containers": [agent],
        "volumes": volumes,
    }


def _claim_spec(storage: str) -> dict[str, Any]:
    return {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": storage}}}


def _volume_claims() -> list[tuple[str, str]]:
    return [("work", WORK_STORAGE), ("state", STATE_STORAGE)]


def _egress_ports(plan: BottlePlan) -> list[int]:
    """The ports the bundle's way out needs: the routes' (approved ones widen it: the backend
    patches the policy when a decision adds a port) and the git upstream's."""
    found = {port for route in plan.routes for port in route.ports}
    git = plan.bottle.git
    if git and git.local is None:
        found.add(urlsplit(git.upstream).port or 443)
    return sorted(found)


def _network_policy(plan: BottlePlan, via: Via) -> dict[str, Any]:
    names = _names(plan, via)
    selector = {TEMPLATE_LABEL: names["template"]} if via == "warm-pool" else {labels.SLUG: plan.slug}
    dns = {
        "to": [
            {
                "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "kube-system"}},
                "podSelector": {"matchLabels": {"k8s-app": "kube-dns"}},
            }
        ],
        "ports": [{"protocol": "UDP", "port": 53}, {"protocol": "TCP", "port": 53}],
    }
    egress = [dns]
    route_ports = _egress_ports(plan)
    if route_ports:
        egress.append(
            {
                "to": [
                    {"ipBlock": {"cidr": "0.0.0.0/0", "except": list(PRIVATE_V4)}},
                    {"ipBlock": {"cidr": "::/0", "except": list(PRIVATE_V6)}},
                ],
                "ports": [{"protocol": "TCP", "port": port} for port in route_ports],
            }
        )
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": _meta(names["policy"], plan, via),
        "spec": {
            "podSelector": {"matchLabels": selector},
            "policyTypes": ["Ingress", "Egress"],
            # Nothing reaches a bottle over the network: `kubectl exec` goes through the kubelet.
            "ingress": [],
            "egress": egress,
        },
    }


def _shared(plan: BottlePlan, via: Via) -> list[dict[str, Any]]:
    """What every way needs: the namespace, the bottles' service account, the bundle's Secret
    (when it injects a credential), the CA ConfigMap, the NetworkPolicy."""
    names = _names(plan, via)
    namespace = {
        "apiVersion": "v1",
        "kind": "Namespace",
        "metadata": {
            "name": NAMESPACE,
            "labels": {
                # bottle-net needs NET_ADMIN, which no Pod Security level below privileged allows;
                # every other container of a bottle passes `restricted`, and is warned against it.
                "pod-security.kubernetes.io/enforce": "privileged",
                "pod-security.kubernetes.io/warn": "restricted",
                **MANAGED_BY,
            },
        },
    }
    account = {
        "apiVersion": "v1",
        "kind": "ServiceAccount",
        "metadata": {"name": SERVICE_ACCOUNT, "namespace": NAMESPACE, "labels": dict(MANAGED_BY)},
        # No role is bound to it, and no container gets its token.
        "automountServiceAccountToken": False,
    }
    secret = {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": _meta(names["secret"], plan, via),
        "type": "Opaque",
        "immutable": True,
        "data": {name: "" for name in plan.secret_env_names},
    }
    ca = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": _meta(names["ca"], plan, via),
        "data": {CA_CERT_NAME: ""},
    }
    return [namespace, account, *([secret] if plan.secret_env_names else []), ca, _network_policy(plan, via)]


def _pod_metadata(plan: BottlePlan, via: Via) -> dict[str, Any]:
    meta: dict[str, Any] = {"labels": _labels(plan, via)}
    if via != "warm-pool":
        meta["annotations"] = _annotations(plan)
    return meta


def _blueprint(plan: BottlePlan, via: Via) -> dict[str, Any]:
    """What a Sandbox and a SandboxTemplate share (agent-sandbox's SandboxBlueprint)."""
    return {
        "podTemplate": {"metadata": _pod_metadata(plan, via), "spec": _pod_spec(plan, via)},
        "volumeClaimTemplates": [
            {"metadata": {"name": name, "labels": _labels(plan, via)}, "spec": _claim_spec(storage)}
            for name, storage in _volume_claims()
        ],
        # Nothing connects to a bottle: no headless Service.
        "service": False,
    }


def render_kubernetes(plan: BottlePlan, *, via: Via = "pod", warm: int = 1) -> list[dict[str, Any]]:
    """The objects of one bottle, in the order they are applied. ``via``: a plain Pod, an
    agent-sandbox Sandbox, or a claim on a warm pool of ``warm`` ready Pods of its agent."""
    if via not in VIAS:
        raise BottleError(f"kubernetes: '{via}' is not a way to run a bottle: use one of {', '.join(VIAS)}")
    if warm < 0:
        raise BottleError(f"kubernetes: a warm pool of {warm} Pods: give 0 or more")
    git = plan.bottle.git
    if git and git.local is not None:
        raise BottleError(
            f"{plan.bottle.path}: git.upstream: a repository on this machine cannot be a kubernetes "
            "bottle's upstream (the gate's mirror is made from the operator's disk); use its https URL"
        )
    objects = _shared(plan, via)
    names = _names(plan, via)
    if via == "pod":
        objects += [
            {
                "apiVersion": "v1",
                "kind": "PersistentVolumeClaim",
                "metadata": _meta(f"{name}-{plan.slug}", plan, via),
                "spec": _claim_spec(storage),
            }
            for name, storage in _volume_claims()
        ]
        objects.append(
            {
                "apiVersion": "v1",
                "kind": "Pod",
                "metadata": {**_meta(names["pod"], plan, via), "annotations": _annotations(plan)},
                "spec": _pod_spec(plan, via),
            }
        )
    elif via == "sandbox":
        objects.append(
            {
                "apiVersion": SANDBOX_API,
                "kind": "Sandbox",
                "metadata": {**_meta(names["pod"], plan, via), "annotations": _annotations(plan)},
                "spec": {**_blueprint(plan, via), "operatingMode": "Running"},
            }
        )
    else:
        template = names["template"]
        objects += [
            {
                "apiVersion": EXTENSIONS_API,
                "kind": "SandboxTemplate",
                "metadata": _meta(template, plan, via),
                "spec": {
                    **_blueprint(plan, via),
                    # The bottle's own NetworkPolicy (above) is the one: the controller's default
                    # opens the public internet to the whole Pod, the agent included.
                    "networkPolicyManagement": "Unmanaged",
                    # A claim that set env or volumes would cold-start, and could change the agent.
                    "envVarsInjectionPolicy": "Disallowed",
                    "volumeClaimTemplatesPolicy": "Disallowed",
                },
            },
            {
                "apiVersion": EXTENSIONS_API,
                "kind": "SandboxWarmPool",
                "metadata": _meta(template, plan, via),
                "spec": {
                    "replicas": warm,
                    "sandboxTemplateRef": {"name": template},
                    # A changed bottle file (new images, routes) replaces the unclaimed Pods at once.
                    "updateStrategy": {"type": "Recreate"},
                },
            },
            {
                "apiVersion": EXTENSIONS_API,
                "kind": "SandboxClaim",
                "metadata": {
                    **_meta(plan.slug, plan, via),
                    "labels": {**_labels(plan, via), **_bottle_labels(plan)},
                    "annotations": _annotations(plan),
                },
                "spec": {
                    "warmPoolRef": {"name": template},
                    # The bottle's own labels on the Pod it adopts (discovery, `ls`); no env, no
                    # volumes: either would make the claim cold-start.
                    "additionalPodMetadata": {"labels": _bottle_labels(plan)},
                },
            },
        ]
    return objects


def fill_values(
    objects: list[dict[str, Any]], *, secret: Mapping[str, str], config: Mapping[str, str]
) -> list[dict[str, Any]]:
    """A copy of ``objects`` with the values the plan does not hold: ``secret`` for the bundle's
    Secret (the credentials by env var name), ``config`` for the CA ConfigMap (the egress CA's
    certificate). Every empty key needs its value, and no other key may be given: a one-line
    BottleError names the first."""
    filled = copy.deepcopy(objects)
    given = {"Secret": dict(secret), "ConfigMap": dict(config)}
    used: dict[str, set[str]] = {"Secret": set(), "ConfigMap": set()}
    for obj in filled:
        kind = obj.get("kind", "")
        if kind not in given:
            continue
        data = obj.get("data", {})
        for key, value in data.items():
            if value != "":
                continue
            if not given[kind].get(key):
                raise BottleError(f"kubernetes: {kind} {obj['metadata']['name']} needs a value for {key}")
            used[kind].add(key)
            text = given[kind][key]
            data[key] = base64.b64encode(text.encode()).decode() if kind == "Secret" else text
    for kind, values in given.items():
        extra = sorted(set(values) - used[kind])
        if extra:
            raise BottleError(f"kubernetes: no {kind} of the bottle has a key {extra[0]}")
    return filled
