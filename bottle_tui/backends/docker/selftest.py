"""`bottle-tui selftest SLUG`: the escape suite against a live docker bottle, aimed at a canary.

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
from typing import Any

import yaml

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


async def _reload(sidecars: str, state: StateDir, before: float) -> None:
    """SIGHUP the bundle and wait until egress says it reloaded (its ready file is rewritten)."""
    await run(["docker", "kill", "--signal", "HUP", sidecars], timeout=30)
    ready = state.egress_ready
    deadline = time.monotonic() + RELOAD_TIMEOUT
    while time.monotonic() < deadline:
        try:
            info = json.loads(ready.read_text())
            if ready.stat().st_mtime > before and info.get("routes_loaded"):
                if info.get("routes_error"):
                    raise BottleError(f"egress refused the selftest routes: {info['routes_error']}")
                return
        except (OSError, ValueError):
            pass
        await asyncio.sleep(0.05)
    raise BottleError(
        f"egress of {state.slug} did not reload within {RELOAD_TIMEOUT:g} s; see {state.egress / 'ready'}"
    )


async def _find_credentials(agent: str, secrets: dict[str, str], tmp: Path) -> list[str]:
    """Where the real credentials show up in the agent: its container config, its processes'
    environments and command lines, and every file it added or changed."""
    findings: list[str] = []

    def look(where: str, data: bytes) -> None:
        for name, value in secrets.items():
            if value.encode() in data:
                findings.append(f"{name} in {where}")

    inspect = await run(["docker", "inspect", "--format", "{{json .Config.Env}}", agent], timeout=30)
    look("the container's environment", inspect.stdout.encode())
    procs = await run(
        [
            "docker",
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
    changed = await run(["docker", "diff", agent], timeout=60)
    for line in changed.stdout.splitlines():
        kind, _, path = line.partition(" ")
        if kind not in ("A", "C") or path.startswith(("/proc", "/sys", "/dev")):
            continue
        dest = tmp / "diff" / uuid.uuid4().hex
        dest.parent.mkdir(parents=True, exist_ok=True)
        got = await run(["docker", "cp", f"{agent}:{path}", str(dest)], check=False, timeout=60)
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
    environ = dict(os.environ if environ is None else environ)
    agent = engine.container_name(info.project, "agent")
    sidecars = engine.container_name(info.project, "sidecars")
    routes_path, trust_path = state.routes, state.egress / "upstream-ca.pem"
    try:
        routes_text, trust = routes_path.read_text(), trust_path.read_bytes() if trust_path.exists() else b""
        policy = yaml.safe_load(routes_text) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise BottleError(f"cannot read the policy of {info.slug} in {routes_path}: {exc}") from None
    added, auth_route = _canary_routes(policy)
    if image is None:
        inspect = await run(["docker", "inspect", "--format", "{{.Config.Image}}", sidecars], timeout=30)
        image = inspect.stdout.strip()
    network = f"{info.project}_egress"
    canary = f"{info.project}-selftest-{uuid.uuid4().hex[:6]}"
    with tempfile.TemporaryDirectory(prefix="bottle-selftest-") as tmpdir:
        tmp = Path(tmpdir)
        pki = tmp / "pki"
        pki.mkdir()
        await _make_pki(pki)
        progress(f"starting canary {canary} on {network}")
        aliases = [a for n in CANARY_NAMES for a in ("--network-alias", n)]
        await run(
            [
                "docker",
                "run",
                "-d",
                "--name",
                canary,
                "--network",
                network,
                *aliases,
                "--label",
                f"{labels.MANAGED}=true",
                "--label",
                f"{labels.SLUG}={info.slug}",
                "--label",
                f"{labels.HOME}={info.home}",
                "--label",
                "dev.bottle-tui.selftest=true",
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
                "/opt/bottle/canary/canary.py",
                "/pki/cert.pem",
                "/pki/key.pem",
            ],
            timeout=60,
        )
        try:
            ip = (
                await run(
                    [
                        "docker",
                        "inspect",
                        "--format",
                        '{{(index .NetworkSettings.Networks "%s").IPAddress}}' % network,
                        canary,
                    ],
                    timeout=30,
                )
            ).stdout.strip()
            policy.setdefault("routes", [])
            policy["routes"] = list(policy["routes"]) + added
            before = time.time()
            atomic_write(routes_path, to_yaml(policy), mode=0o600)
            atomic_write(trust_path, trust.rstrip(b"\n") + b"\n" + (pki / "ca.pem").read_bytes(), mode=0o644)
            try:
                await _reload(sidecars, state, before)
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
                progress(f"running {len(attacks)} attacks and controls from inside {agent}")
                out = await run(
                    ["docker", "exec", agent, "bash", "-c", escape_suite.suite_script(attacks)],
                    check=False,
                    timeout=900,
                )
                credentials, secrets, not_judged = judgeable_credentials(policy, environ)
                outcomes = escape_suite.judge_all(
                    attacks,
                    out.stdout,
                    real_secrets=secrets,
                    log=escape_suite.read_log(state.egress_log),
                    credentials=credentials,
                )
                findings = await _find_credentials(agent, secrets, tmp)
            finally:
                restore_at = time.time()
                atomic_write(routes_path, routes_text, mode=0o600)
                atomic_write(trust_path, trust, mode=0o644)
                try:
                    await _reload(sidecars, state, restore_at)
                except (BottleError, CommandError) as exc:
                    progress(
                        f"warning: the original policy was written back but egress did not confirm the reload: {exc}"
                    )
        finally:
            await run(["docker", "rm", "-f", canary], check=False, timeout=60)
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
