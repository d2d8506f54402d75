"""`bottle-tui selftest SLUG`: the escape suite against a live bottle, aimed at a canary.

Attacks need an "internet" that shows whether they got through, and must never touch a real one.
So for the length of the run:

- a canary container of ours (the sidecars image's ``canary.py``) joins the bottle's egress
  network under names that exist nowhere else (``*.selftest.invalid``), with a throwaway CA that
  signs only those names;
- the bottle's routes.yaml gets one route to the canary's "allowed" name (and, when the bottle
  injects a credential, a second one injecting the same credential, to show it arrives upstream
  and never comes back), and egress trusts the throwaway CA; both files are restored afterwards
  and egress reloads them (SIGHUP through the bundle's init);
- the attacks run in one `docker exec` in the agent; the real credentials are looked for in the
  agent's environment, its processes and every file it changed, on the host side.

Nothing is sent to any other host: blocked names resolve only on the bottle's egress network, to
the canary, and the agent's network has no route out.

``run_suite`` is written once against a ``Site``: how the run reaches the bottle's policy, egress
and engine. ``LocalSite`` is a docker bottle's (its state folder, a canary container); a swarm
bottle's is backends/swarm/selftest.py (its bundle's control command, a canary service on its
node).
"""

from __future__ import annotations

import asyncio
import json
import os
import tempfile
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import yaml

from bottle_contract import workers
from bottle_contract.files import atomic_write

from ... import escape_suite
from ...errors import BottleError
from ...plan import credential_problem
from ...runner import CommandError, run
from ...state import StateDir
from . import engine, labels
from .compose import to_yaml

CANARY_ALLOWED = "allowed.selftest.invalid"
CANARY_AUTHED = "auth.selftest.invalid"
CANARY_BLOCKED = "blocked.selftest.invalid"
CANARY_NAMES = (CANARY_ALLOWED, CANARY_AUTHED, CANARY_BLOCKED)
RELOAD_TIMEOUT = 20.0

Progress = Callable[[str], None]


@dataclass
class SelftestResult:
    outcomes: list[escape_suite.AttackResult]
    credential_findings: list[str]
    credential_checked: list[str]
    # (env var, why): credentials set here but too short to look for (plan.credential_problem).
    not_judged: list[tuple[str, str]] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return all(o.ok for o in self.outcomes) and not self.credential_findings

    def report(self) -> str:
        lines = [escape_suite.report(self.outcomes)]
        if self.credential_checked:
            verdict = "LEAKED" if self.credential_findings else "blocked"
            lines.append(
                f"{verdict:<8} {'credentials-in-agent':<34} the real {', '.join(self.credential_checked)} "
                "in the agent's environment, processes or changed files"
                + (f"  ({'; '.join(self.credential_findings)})" if self.credential_findings else "")
            )
        elif not self.not_judged:
            lines.append(
                "skipped  credentials-in-agent               no credential of this bottle is set in this shell"
            )
        for name, why in self.not_judged:
            lines.append(
                f"skipped  {'credential-' + name:<34} not judged: ${name} is too short to tell a leak from chance "
                f"({why}); its injection is still checked. Set the real credential and run selftest again"
            )
        return "\n".join(lines)


async def _make_pki(folder: Path) -> None:
    ca_key, ca, key, csr, cert = (str(folder / n) for n in ("ca-key.pem", "ca.pem", "key.pem", "req.csr", "cert.pem"))
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    await run(
        [
            "openssl",
            "req",
            "-x509",
            *ec,
            "-sha256",
            "-days",
            "1",
            "-keyout",
            ca_key,
            "-out",
            ca,
            "-subj",
            "/CN=bottle-tui selftest canary CA",
            "-addext",
            "basicConstraints=critical,CA:TRUE",
            "-addext",
            "keyUsage=critical,keyCertSign,cRLSign",
        ],
        timeout=60,
    )
    await run(["openssl", "req", *ec, "-keyout", key, "-out", csr, "-subj", f"/CN={CANARY_ALLOWED}"], timeout=60)
    ext = folder / "san.ext"
    ext.write_text(
        "subjectAltName="
        + ",".join(f"DNS:{n}" for n in CANARY_NAMES)
        + "\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n"
    )
    await run(
        [
            "openssl",
            "x509",
            "-req",
            "-in",
            csr,
            "-CA",
            ca,
            "-CAkey",
            ca_key,
            "-CAcreateserial",
            "-days",
            "1",
            "-sha256",
            "-extfile",
            str(ext),
            "-out",
            cert,
        ],
        timeout=60,
    )
    for name in ("cert.pem", "key.pem"):
        os.chmod(folder / name, 0o644)  # the canary runs as another uid
    os.chmod(folder, 0o755)


def _canary_routes(policy: dict[str, Any]) -> tuple[list[dict[str, Any]], dict[str, Any] | None]:
    """Routes to add: the allowed canary, and an authed one that copies the first route with auth."""
    # Every key explicit, as egress demands; DLP as the bottle's own (its top-level dlp), so the
    # attacks meet the settings a route the operator adds would have.
    dlp = dict(policy.get("dlp") or {"body": True, "disabled_rules": [], "max_body_bytes": 8 * 1024 * 1024})
    allowed = {
        "host": CANARY_ALLOWED,
        "ports": [80, 443],
        "methods": [],
        "paths": [],
        "schemes": ["http", "https"],
        "auth": None,
        "dlp": dlp,
        "model_tools": [],
        "once": None,
    }
    auth_route = next((r for r in policy.get("routes") or [] if isinstance(r, dict) and r.get("auth")), None)
    added = [allowed]
    if auth_route is not None:
        added.append(
            {
                "host": CANARY_AUTHED,
                "ports": [443],
                "methods": [],
                "paths": [],
                "schemes": ["https"],
                "auth": dict(auth_route["auth"]),
                "dlp": dlp,
                "model_tools": [],
                "once": None,
            }
        )
    return added, auth_route


class Site(Protocol):
    """A running bottle as the selftest reaches it: a docker bottle's state folder and engine
    (``LocalSite``), or a swarm bottle's bundle through its node's context (backends/swarm)."""

    @property
    def slug(self) -> str: ...

    @property
    def agent(self) -> str:
        """The agent's container, on the engine ``docker`` reaches."""

    @property
    def network(self) -> str:
        """Where the canary joins the bundle (for messages)."""

    @property
    def docker(self) -> list[str]:
        """The docker CLI as it reaches the agent's engine."""

    async def policy(self) -> tuple[str, bytes]:
        """routes.yaml and egress's upstream trust, as they are in force."""

    async def put(self, routes: str, trust: bytes, *, was: str) -> None:
        """Replace routes.yaml (``was``: its text as read) and the upstream trust."""

    async def reload(self) -> None:
        """Have egress re-read them; return once it says it did (its ready file is rewritten)."""

    async def requests_log(self) -> list[dict[str, Any]]:
        """egress's decisions log (requests.jsonl), parsed."""

    async def start_canary(self, pki: Path, names: tuple[str, ...], progress: Progress) -> str:
        """A canary serving ``pki``'s cert.pem and key.pem under ``names`` on the bundle's way out,
        where the agent has no route; its address there."""

    async def remove_canary(self) -> None: ...


def _ready_doc(path: Path) -> dict[str, Any]:
    try:
        doc = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return doc if isinstance(doc, dict) else {}


@dataclass
class LocalSite:
    """A docker bottle: its sidecar folders in the state folder, the canary a container of ours."""

    state: StateDir
    info: engine.BottleInfo
    image: str | None = None  # the canary's (default: the bundle's own)
    canary: str = ""

    @property
    def slug(self) -> str:
        return self.info.slug

    @property
    def agent(self) -> str:
        return engine.container_name(self.info.project, "agent")

    @property
    def sidecars(self) -> str:
        return engine.container_name(self.info.project, "sidecars")

    @property
    def network(self) -> str:
        return f"{self.info.project}_egress"

    @property
    def docker(self) -> list[str]:
        return ["docker"]

    @property
    def trust_path(self) -> Path:
        return self.state.egress / "upstream-ca.pem"

    async def policy(self) -> tuple[str, bytes]:
        try:
            trust = self.trust_path.read_bytes() if self.trust_path.exists() else b""
            return self.state.routes.read_text(), trust
        except OSError as exc:
            raise BottleError(f"cannot read the policy of {self.slug} in {self.state.routes}: {exc}") from None

    async def put(self, routes: str, trust: bytes, *, was: str) -> None:
        atomic_write(self.state.routes, routes, mode=0o600)
        atomic_write(self.trust_path, trust, mode=0o644)

    async def reload(self) -> None:
        ready = self.state.egress_ready
        before = _ready_doc(ready)
        await run(["docker", "kill", "--signal", "HUP", self.sidecars], timeout=30)
        deadline = time.monotonic() + RELOAD_TIMEOUT
        while time.monotonic() < deadline:
            info = _ready_doc(ready)
            # Every worker took the new policy (or refused it), not only the first to answer.
            if workers.reloaded(before, info):
                reload_problem(info)
                return
            await asyncio.sleep(0.05)
        raise BottleError(f"egress of {self.slug} did not reload within {RELOAD_TIMEOUT:g} s; see {ready}")

    async def requests_log(self) -> list[dict[str, Any]]:
        return escape_suite.read_log(self.state.egress_log)

    async def start_canary(self, pki: Path, names: tuple[str, ...], progress: Progress) -> str:
        image = self.image
        if image is None:
            inspect = await run(["docker", "inspect", "--format", "{{.Config.Image}}", self.sidecars], timeout=30)
            image = inspect.stdout.strip()
        self.canary = f"{self.info.project}-selftest-{uuid.uuid4().hex[:6]}"
        progress(f"starting canary {self.canary} on {self.network}")
        aliases = [a for n in names for a in ("--network-alias", n)]
        await run(
            [
                "docker",
                "run",
                "-d",
                "--name",
                self.canary,
                "--network",
                self.network,
                *aliases,
                *(a for label in canary_labels(self.info) for a in ("--label", label)),
                "--cap-drop",
                "ALL",
                "--cap-add",
                "NET_BIND_SERVICE",
                "--security-opt",
                "no-new-privileges:true",
                "-v",
                f"{pki}:/pki:ro",
                "--entrypoint",
                "python3",
                image,
                *CANARY_ARGV[1:],
                "/pki/cert.pem",
                "/pki/key.pem",
            ],
            timeout=60,
        )
        address = '{{(index .NetworkSettings.Networks "%s").IPAddress}}' % self.network
        return (await run(["docker", "inspect", "--format", address, self.canary], timeout=30)).stdout.strip()

    async def remove_canary(self) -> None:
        if self.canary:
            await run(["docker", "rm", "-f", self.canary], check=False, timeout=60)


# The canary's command in the sidecars image (python3 first), before its certificate and key.
CANARY_ARGV = ["python3", "/opt/bottle/canary/canary.py"]
SELFTEST_LABEL = "dev.bottle-tui.selftest"


def canary_labels(info: engine.BottleInfo) -> list[str]:
    """The canary's labels: the bottle's (so cleanup and stop find it) and the selftest's own."""
    return [
        f"{labels.MANAGED}=true",
        f"{labels.SLUG}={info.slug}",
        f"{labels.HOME}={info.home}",
        f"{SELFTEST_LABEL}=true",
    ]


def reload_problem(ready: dict[str, Any]) -> None:
    """A one-line error when egress's ready file says it refused the policy it reloaded."""
    if ready.get("routes_error"):
        raise BottleError(f"egress refused the selftest routes: {ready['routes_error']}")


def changed_leaves(diff: str) -> list[str]:
    """The paths of `docker diff` output that were added or changed and hold nothing else listed:
    a folder is listed as changed when something in it is, and that something is listed too, so
    copying the folder would copy all of it again (all of /usr, for a changed /usr/sbin)."""
    paths = []
    for line in diff.splitlines():
        kind, _, path = line.partition(" ")
        if kind in ("A", "C") and path and not path.startswith(("/proc", "/sys", "/dev")):
            paths.append(path)
    holding = {p[:i] for p in paths for i in range(1, len(p)) if p[i] == "/"}
    return [p for p in paths if p not in holding]


async def _find_credentials(docker: list[str], agent: str, secrets: dict[str, str], tmp: Path) -> list[str]:
    """Where the real credentials show up in the agent: its container config, its processes'
    environments and command lines, and every file it added or changed."""
    findings: list[str] = []

    def look(where: str, data: bytes) -> None:
        for name, value in secrets.items():
            if value.encode() in data:
                findings.append(f"{name} in {where}")

    inspect = await run([*docker, "inspect", "--format", "{{json .Config.Env}}", agent], timeout=30)
    look("the container's environment", inspect.stdout.encode())
    procs = await run(
        [
            *docker,
            "exec",
            agent,
            "sh",
            "-c",
            "for p in /proc/[0-9]*; do cat $p/environ $p/cmdline 2>/dev/null; echo; done",
        ],
        check=False,
        timeout=60,
    )
    look("a process's environment or command line", procs.stdout.encode())
    changed = await run([*docker, "diff", agent], timeout=60)
    for path in changed_leaves(changed.stdout):
        dest = tmp / "diff" / uuid.uuid4().hex
        dest.parent.mkdir(parents=True, exist_ok=True)
        got = await run([*docker, "cp", f"{agent}:{path}", str(dest)], check=False, timeout=60)
        if got.returncode != 0:
            continue
        files = [dest] if dest.is_file() else [p for p in dest.rglob("*") if p.is_file()]
        for f in files:
            try:
                look(f"file {path}", f.read_bytes())
            except OSError:
                pass
    return sorted(set(findings))


async def run_selftest(
    state: StateDir,
    info: engine.BottleInfo,
    progress: Progress,
    *,
    environ: dict[str, str] | None = None,
    image: str | None = None,
) -> SelftestResult:
    """The escape suite against the docker bottle ``info`` (see ``run_suite``)."""
    return await run_suite(LocalSite(state, info, image), progress, environ=environ)


async def run_suite(site: Site, progress: Progress, *, environ: Mapping[str, str] | None = None) -> SelftestResult:
    """The escape suite against the bottle ``site`` reaches, aimed at a canary of ours; the
    bottle's policy and trust are as before when it returns (or a warning says they may not be)."""
    environ = dict(os.environ if environ is None else environ)
    routes_text, trust = await site.policy()
    try:
        policy = yaml.safe_load(routes_text) or {}
    except yaml.YAMLError as exc:
        raise BottleError(f"cannot read the policy of {site.slug}: {exc}") from None
    added, auth_route = _canary_routes(policy)
    with tempfile.TemporaryDirectory(prefix="bottle-selftest-") as tmpdir:
        tmp = Path(tmpdir)
        pki = tmp / "pki"
        pki.mkdir()
        await _make_pki(pki)
        try:
            ip = await site.start_canary(pki, CANARY_NAMES, progress)
            policy.setdefault("routes", [])
            policy["routes"] = list(policy["routes"]) + added
            canary_routes = to_yaml(policy)
            await site.put(canary_routes, trust.rstrip(b"\n") + b"\n" + (pki / "ca.pem").read_bytes(), was=routes_text)
            try:
                await site.reload()
                auth = auth_route["auth"] if auth_route else {}
                targets = escape_suite.Targets(
                    allowed=CANARY_ALLOWED,
                    blocked=CANARY_BLOCKED,
                    direct_ip=ip,
                    authed=CANARY_AUTHED if auth_route else None,
                    placeholder_env=auth.get("token_env"),
                    auth_scheme=auth.get("scheme", "header"),
                    auth_header=auth.get("header"),
                )
                attacks = escape_suite.build_suite(targets)
                progress(f"running {len(attacks)} attacks and controls from inside {site.agent}")
                out = await run(
                    [*site.docker, "exec", site.agent, "bash", "-c", escape_suite.suite_script(attacks)],
                    check=False,
                    timeout=900,
                )
                credentials, secrets, not_judged = judgeable_credentials(policy, environ)
                outcomes = escape_suite.judge_all(
                    attacks,
                    out.stdout,
                    real_secrets=secrets,
                    log=await site.requests_log(),
                    credentials=credentials,
                )
                findings = await _find_credentials(site.docker, site.agent, secrets, tmp)
            finally:
                try:
                    await site.put(routes_text, trust, was=canary_routes)
                except (BottleError, CommandError) as exc:
                    progress(f"warning: the bottle's own policy was not written back (the selftest routes stay): {exc}")
                else:
                    try:
                        await site.reload()
                    except (BottleError, CommandError) as exc:
                        progress(
                            "warning: the original policy was written back but egress did not confirm the reload: "
                            f"{exc}"
                        )
        finally:
            await site.remove_canary()
    return SelftestResult(outcomes, findings, sorted(secrets), not_judged)


def judgeable_credentials(
    policy: dict[str, Any], environ: Mapping[str, str]
) -> tuple[dict[str, str], dict[str, str], list[tuple[str, str]]]:
    """The credentials of the policy's routes that are set in ``environ``; those long enough to
    look for in what the agent sees (a short one turns up by chance in any file); and (name, why)
    for each one too short to judge."""
    schemes = {
        r["auth"]["token_env"]: str(r["auth"].get("scheme", ""))
        for r in policy.get("routes") or []
        if isinstance(r, dict) and isinstance(r.get("auth"), dict) and r["auth"].get("token_env")
    }
    credentials = {n: environ[n] for n in sorted(schemes) if environ.get(n)}
    problems = {n: credential_problem(schemes[n], v) for n, v in credentials.items()}
    judged = {n: v for n, v in credentials.items() if problems[n] is None}
    return credentials, judged, [(n, why) for n, why in problems.items() if why is not None]
