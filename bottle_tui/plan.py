"""The backend-neutral BottlePlan (pure) and the preflight text shown before a bottle starts."""

from __future__ import annotations

import re
import shlex
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from bottle_contract import ports, usage
from bottle_contract.usage import Budget, Metered, Metering

from .config import Config
from .errors import BottleError
from .manifest import AgentSpec, BottleSpec, Manifests, Route
from .snapshots import Snapshot
from .state import StateDir, project_name

CA_MOUNT = "/etc/bottle/ca"
CA_CERT_NAME = "egress-ca.pem"
AGENT_HOME = "/home/agent"
WORKDIR = f"{AGENT_HOME}/work"
# Node's fetch ignores the proxy variables; this preload (agent image) makes it use them.
NODE_PROXY_PRELOAD = "/opt/bottle/node/proxy-preload.js"
CA_ENV_VARS = (
    "NODE_EXTRA_CA_CERTS",
    "SSL_CERT_FILE",
    "REQUESTS_CA_BUNDLE",
    "CURL_CA_BUNDLE",
    "GIT_SSL_CAINFO",
    "PIP_CERT",
)
SUPPORTED_BACKENDS = ("docker", "smolvm", "swarm")
GIT_GATE_HOST = "git-gate"


def claude_command(args: Sequence[str]) -> list[str]:
    """A fresh claude with the agent's arguments (``claude_session`` continues a conversation)."""
    return ["claude", *args]


# Where claude keeps its conversations in the agent (one .jsonl transcript per session).
TRANSCRIPTS = f"{AGENT_HOME}/.claude/projects"
# The pid of the claude session the console's tmux pane runs in a bottle (the agent's own /tmp).
PANE_PIDFILE = "/tmp/.bottle-tui-pane-claude.pid"
# Ends the claude session a pidfile names (its process group: `docker exec -t` makes it a session
# leader). A `docker exec` client that goes away (a respawned or closed tmux pane) leaves its
# process running in the container, so the pane's last session is ended before a new one starts
# and when the pane moves to another bottle. Only a process whose command line says claude is
# signalled; HUP first, KILL after 2 s.
_END_PANE_SESSION = r"""
end_pane_session() {
  old=$(cat "$1" 2>/dev/null) || return 0
  case $old in ''|*[!0-9]*) return 0;; esac
  [ "$old" = "$$" ] && return 0
  tr '\0' ' ' < "/proc/$old/cmdline" 2>/dev/null | grep -q claude || return 0
  kill -HUP -- "-$old" 2>/dev/null || kill -HUP "$old" 2>/dev/null
  i=0
  while [ $i -lt 20 ] && kill -0 "$old" 2>/dev/null; do sleep 0.1; i=$((i + 1)); done
  kill -KILL -- "-$old" 2>/dev/null || kill -KILL "$old" 2>/dev/null
  return 0
}
"""
# $1 transcripts folder, $2 continue|fresh, $3 pidfile ('' when not the pane's), then claude's
# arguments, passed as arguments (never pasted into the script): any path survives as it is.
_LAUNCH = (
    _END_PANE_SESSION
    + r"""
dir=$1 mode=$2 pidfile=$3
shift 3
if [ -n "$pidfile" ]; then end_pane_session "$pidfile"; echo $$ > "$pidfile"; fi
if [ "$mode" = continue ] && [ -n "$(find "$dir" -name '*.jsonl' -print -quit 2>/dev/null)" ]; then
  exec claude --continue "$@"
fi
exec claude "$@"
"""
)
_RELEASE = (
    _END_PANE_SESSION
    + r"""
end_pane_session "$1"; rm -f "$1"
"""
)


def claude_session(args: Sequence[str], *, fresh: bool, pane: bool, transcripts: str = TRANSCRIPTS) -> list[str]:
    """What attach runs in the agent: ``claude --continue`` when the bottle has a conversation to
    continue, else a fresh claude (decided in the agent, at launch). ``pane``: the session is the
    console pane's, and ends the pane's previous one first."""
    return [
        "sh",
        "-c",
        _LAUNCH,
        "bottle-claude",
        transcripts,
        "fresh" if fresh else "continue",
        PANE_PIDFILE if pane else "",
        *args,
    ]


def end_pane_session_argv() -> list[str]:
    """Ends the claude session the console's pane left running in a bottle (if any)."""
    return ["sh", "-c", _RELEASE, "bottle-claude-release", PANE_PIDFILE]


def placeholder(env_name: str) -> str:
    """What the agent holds instead of a real credential; egress swaps it for the real value."""
    return f"bottle-placeholder-{env_name}"


@dataclass(frozen=True)
class BottlePlan:
    slug: str
    agent: AgentSpec
    bottle: BottleSpec
    state: StateDir
    images: dict[str, str] = field(hash=False)
    started_at: str
    home: Path
    # A fork (`start AGENT --from NAME`): the agent's filesystem, its home and the policy in force
    # come from this snapshot instead of the agent image, an empty volume and the manifest.
    snapshot: Snapshot | None = None
    config: Config = field(default_factory=Config, hash=False)  # the operator's config.yaml
    # A warm pool member (backends/docker/pool.py): no agent identity yet; a claim gives it one.
    pooled: bool = False

    @property
    def pool_size(self) -> int:
        return pool_size(self.bottle, self.config)

    @property
    def backend(self) -> str:
        return self.bottle.backend

    @property
    def project(self) -> str:
        return project_name(self.slug)

    @property
    def routes(self) -> tuple[Route, ...]:
        return self.bottle.routes

    @property
    def budget(self) -> Budget | None:
        """What the bottle may spend on model calls: its manifest's budget, else config.yaml's."""
        return self.bottle.budget or self.config.budget

    @property
    def metering(self) -> Metering:
        """What egress meters (metering.json): the metered hosts, the prices (the shipped table
        under config.yaml's), the budget."""
        prices = {**usage.default_prices(), **dict(self.config.prices)}
        return Metering(
            slug=self.slug,
            metered=tuple(Metered(host, "anthropic") for host in self.bottle.metered),
            prices=prices,
            prices_date=usage.PRICES_DATE,
            budget=self.budget,
        )

    @property
    def daemons(self) -> tuple[str, ...]:
        """Sidecar daemons the bundle's init starts."""
        return (
            ("egress",)
            + (("git-gate",) if self.bottle.git else ())
            + (("supervise",) if self.bottle.supervise.enabled else ())
            + ("status",)
        )

    @property
    def git_origin(self) -> str | None:
        """The agent's only git remote: the gate's mirror of git.upstream, on the internal network."""
        if not self.bottle.git:
            return None
        return f"http://{GIT_GATE_HOST}:{ports.GIT_GATE}/{self.git_repo}.git"

    @property
    def git_repo(self) -> str:
        """The name the gate serves the upstream under (a local upstream: its folder's name)."""
        git = self.bottle.git
        if git is None:
            return ""
        return git_repo_name(str(git.local) if git.local else git.upstream)

    @property
    def git_review(self) -> bool:
        """Whether the gate holds clean pushes as git-push proposals (a local upstream always does)."""
        return bool(self.bottle.git and (self.bottle.git.local is not None or self.bottle.git.review))

    @property
    def mounts_queue(self) -> bool:
        """Whether the bundle gets the proposal queue: supervise writes it, so does a reviewing gate,
        and so does egress when a budget is reached."""
        return self.bottle.supervise.enabled or self.git_review or self.budget is not None

    @property
    def supervise_url(self) -> str | None:
        """The supervise MCP server as the agent reaches it (never through the proxy)."""
        return f"http://supervise:{ports.SUPERVISE}/mcp" if self.bottle.supervise.enabled else None

    @property
    def daemon_secrets(self) -> dict[str, tuple[str, ...]]:
        """Which host env vars each sidecar daemon gets (and no other daemon, nor the agent)."""
        return {
            "egress": tuple(dict.fromkeys(r.auth.token_env for r in self.routes if r.auth)),
            "git-gate": (self.bottle.git.credentials_env,)
            if self.bottle.git and self.bottle.git.credentials_env
            else (),
        }

    @property
    def secret_env_names(self) -> tuple[str, ...]:
        """Host env vars whose values only the sidecars receive (credentials egress injects)."""
        return tuple(dict.fromkeys(n for names in self.daemon_secrets.values() for n in names))

    @property
    def agent_env(self) -> dict[str, str]:
        proxy = f"http://egress:{ports.EGRESS}"
        ca = f"{CA_MOUNT}/{CA_CERT_NAME}"
        # supervise and the gate are on the internal network: reached directly, not through egress.
        no_proxy = (
            "localhost,127.0.0.1,::1"
            + (",supervise" if self.bottle.supervise.enabled else "")
            + (f",{GIT_GATE_HOST}" if self.bottle.git else "")
        )
        env: dict[str, str] = dict(self.bottle.env)
        env.update({name: placeholder(name) for name in self.secret_env_names})
        env.update(
            {
                "HTTP_PROXY": proxy,
                "HTTPS_PROXY": proxy,
                "http_proxy": proxy,
                "https_proxy": proxy,
                "NO_PROXY": no_proxy,
                "no_proxy": no_proxy,
                "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1",
                "DISABLE_AUTOUPDATER": "1",
                "NODE_OPTIONS": f"--require {NODE_PROXY_PRELOAD}",
                "BOTTLE_SLUG": self.slug,
                "BOTTLE_AGENT": self.agent.name,
                "BOTTLE_NAME": self.bottle.name,
            }
        )
        if self.pooled:
            # Who it is comes at the claim: `docker exec` passes these (see identity_env).
            del env["BOTTLE_SLUG"], env["BOTTLE_AGENT"]
        env.update({var: ca for var in CA_ENV_VARS})
        if self.bottle.supervise.enabled:
            # Claude Code would give up on a supervise request long before the operator's deadline.
            env["MCP_TOOL_TIMEOUT"] = str((self.bottle.supervise.timeout_seconds + 30) * 1000)
        return env

    @property
    def claude_args(self) -> list[str]:
        """The agent's model, system prompt and extra arguments, as claude options."""
        args: list[str] = []
        if self.agent.model:
            args += ["--model", self.agent.model]
        if self.agent.prompt:
            args += ["--append-system-prompt", self.agent.prompt]
        return args + list(self.agent.claude_args)

    def claude_argv(self) -> list[str]:
        return claude_command(self.claude_args)


def pool_size(bottle: BottleSpec, config: Config) -> int:
    """Warm bottles to keep of ``bottle``: its ``pool.size``, else config.yaml's for a docker bottle
    without git (the only ones a pool can hold)."""
    if bottle.pool is not None:
        return bottle.pool
    return config.pool_size if bottle.backend == "docker" and bottle.git is None else 0


def identity_env(slug: str, agent: str) -> dict[str, str]:
    """What a command run in the agent learns of its bottle: a claimed pool member's container was
    made before it had a slug, so every exec passes these (the same values a cold start sets)."""
    return {"BOTTLE_SLUG": slug, "BOTTLE_AGENT": agent}


def git_repo_name(upstream: str) -> str:
    """The name the gate serves an upstream under: its last path part without .git."""
    tail = upstream.rstrip("/").rsplit("/", 1)[-1].rsplit(":", 1)[-1]
    tail = tail[:-4] if tail.endswith(".git") else tail
    return re.sub(r"[^A-Za-z0-9._-]", "-", tail).strip(".-")[:100] or "repo"


def resolve(
    manifests: Manifests,
    agent_name: str,
    *,
    slug: str,
    images: dict[str, str],
    started_at: str,
    state: StateDir,
    config: Config | None = None,
) -> BottlePlan:
    try:
        agent = manifests.agents[agent_name]
    except KeyError:
        from difflib import get_close_matches

        hint = get_close_matches(agent_name, list(manifests.agents), n=1)
        known = ", ".join(sorted(manifests.agents)) or "none"
        raise BottleError(
            f"no agent named '{agent_name}' in {manifests.home / 'agents'}"
            + (f": did you mean '{hint[0]}'?" if hint else f" (known: {known}); add agents/{agent_name}.md")
        ) from None
    bottle = manifests.bottles[agent.bottle]
    if bottle.backend not in SUPPORTED_BACKENDS:
        raise BottleError(f"{bottle.path}: backend: '{bottle.backend}' bottles cannot start yet; use backend: docker")
    if bottle.git and bottle.git.local is None and not bottle.git.upstream.startswith("https://"):
        # The gate runs in the sidecars container: it has no SSH key and sees none of the host's paths.
        raise BottleError(
            f"{bottle.path}: git.upstream: the git gate mirrors https:// upstreams and repositories on this machine only; "
            f"use the https URL of {bottle.git.upstream}, or a path to a local clone"
        )
    return BottlePlan(
        slug=slug,
        agent=agent,
        bottle=bottle,
        state=state,
        images=images,
        started_at=started_at,
        home=manifests.home,
        config=config or Config(),
    )


def _route_line(route: Route) -> str:
    parts = [route.host, "ports " + ",".join(map(str, route.ports))]
    parts.append("methods " + ",".join(route.methods) if route.methods else "any method")
    parts.append("paths " + " ".join(route.paths) if route.paths else "any path")
    if route.auth:
        target = route.auth.header or "Authorization"
        parts.append(f"injects {route.auth.scheme} {target} from ${route.auth.token_env}")
    return "; ".join(parts)


def preflight_text(plan: BottlePlan) -> str:
    """What will happen, in the operator's terms. Names env vars, never their values."""
    b, a = plan.bottle, plan.agent
    lines = [
        f"agent      {a.name}  ({a.path})",
        f"bottle     {b.name}  ({b.path})",
        f"backend    {b.backend}, compose project {plan.project}",
        *(
            [f"microVM    {plan.project}: its only way out is the sidecar bundle's address"]
            if b.backend == "smolvm"
            else []
        ),
        f"slug       {plan.slug}",
        *(
            [
                f"from       snapshot {plan.snapshot.name} of {plan.snapshot.of} ({plan.snapshot.created_at}): "
                "its filesystem, checkout and ~/.claude, and the policy in force then (a new CA, "
                "its own credentials)"
            ]
            if plan.snapshot
            else []
        ),
        "egress     "
        + (
            "no routes: every request is blocked"
            if not b.routes
            else f"{len(b.routes)} route(s), everything else answers 403"
        ),
    ]
    lines += [f"  - {_route_line(r)}" for r in b.routes]
    if b.git:
        cred = f", credentials from ${b.git.credentials_env}" if b.git.credentials_env else ""
        where = f"local repository {b.git.local}" if b.git.local else b.git.upstream
        lines.append(f"git        {where} (branch {b.git.branch}{cred})")
        guarded = f"; protected: {', '.join(b.git.protected)}" if b.git.protected else ""
        lines.append(f"  - the agent's origin is the gate {plan.git_origin}: pushes scanned with gitleaks{guarded}")
        if b.git.local:
            lines.append(
                f"  - clean pushes wait as git-push proposals; approving one brings it home as "
                f"refs/heads/bottle/{plan.slug}/<branch> (nothing else in the repository is touched)"
            )
        elif b.git.review:
            lines.append(
                "  - git.review: clean pushes wait in the gate as git-push proposals; approving one has the gate "
                "push it upstream (rejecting sends your note to the agent)"
            )
    else:
        lines.append("git        none")
    budget = plan.budget
    lines.append(
        "budget     "
        + (f"{budget.describe()} (model calls refused once reached)" if budget else "none")
        + f"; metered: {', '.join(b.metered)}"
    )
    lines.append(
        f"supervise  {'on' if b.supervise.enabled else 'off'}"
        + (f", decisions time out after {b.supervise.timeout_seconds} s" if b.supervise.enabled else "")
    )
    env_names = sorted(dict(b.env))
    lines.append("env        " + (", ".join(env_names) if env_names else "none"))
    secrets = plan.secret_env_names
    if secrets:
        lines.append("secrets    " + ", ".join(f"{n} (sidecars only; agent holds a placeholder)" for n in secrets))
    lines.append(f"resources  {b.resources.cpus:g} cpus, {b.resources.memory_mib} MiB, {b.resources.pids} pids")
    lines.append(f"images     agent {plan.images.get('agent', '?')}, sidecars {plan.images.get('sidecars', '?')}")
    lines.append(f"state      {plan.state.path}")
    if plan.pool_size and plan.snapshot is None:
        lines.append(
            f"pool       {plan.pool_size} warm bottle(s) of {b.name} kept: start claims a ready one made for this "
            "manifest, these images and these credentials (else it starts cold), then refills in the background"
        )
    shown = ["<prompt: %d chars>" % len(a.prompt) if arg == a.prompt else arg for arg in plan.claude_argv()]
    lines.append(f"claude     {shlex.join(shown)}")
    return "\n".join(lines)


def missing_secrets(plan: BottlePlan, environ: Mapping[str, str]) -> list[str]:
    return [n for n in plan.secret_env_names if not environ.get(n)]


# A credential shorter than this cannot be told apart from chance: selftest would find it in every
# file of the agent, and egress, which scrubs it from every answer, would cut it out of ordinary text.
MIN_CREDENTIAL_CHARS = 12


def credential_problem(scheme: str, value: str) -> str | None:
    """Why the credential ``value`` (of an auth ``scheme``) is too short to judge, or None. For
    basic auth the password alone is scrubbed too, so it must be as long."""
    if len(value) < MIN_CREDENTIAL_CHARS:
        return f"it is {len(value)} characters, shorter than {MIN_CREDENTIAL_CHARS}"
    if scheme == "basic" and ":" in value:
        password = value.split(":", 1)[1]
        if len(password) < MIN_CREDENTIAL_CHARS:
            return f"its password is {len(password)} characters, shorter than {MIN_CREDENTIAL_CHARS}"
    return None


def short_credentials(plan: BottlePlan, environ: Mapping[str, str]) -> list[tuple[str, str]]:
    """(env var, why) for each credential egress injects whose value here is too short to judge."""
    found: dict[str, str] = {}
    for route in plan.routes:
        value = environ.get(route.auth.token_env, "") if route.auth else ""
        if route.auth and value and route.auth.token_env not in found:
            problem = credential_problem(route.auth.scheme, value)
            if problem:
                found[route.auth.token_env] = problem
    return sorted(found.items())
