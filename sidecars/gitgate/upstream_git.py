"""Talking to the upstream repository: the mirror's refresh (fetch) and the forwarding of a push.

The operator's credential reaches git only through the environment of the one git process that
talks upstream (``GIT_CONFIG_COUNT`` / ``GIT_CONFIG_KEY_n``: an ``http.<upstream>.extraHeader``
scoped to the upstream URL), never through a file, a command line or the mirror's config.
"""

from __future__ import annotations

import base64
import os
import subprocess
import time
from dataclasses import dataclass

from push_policy import GateConfig, GateError, RefUpdate

# GitHub's convention for tokens; GitLab, Gitea and Bitbucket take any user name with a token.
TOKEN_USER = "x-access-token"


def upstream_ca_path(state_dir: str) -> str:
    return os.path.join(state_dir, "upstream-ca.pem")


def basic_credential(value: str) -> str:
    """``user:password`` is used as written; a bare token goes with the user x-access-token."""
    pair = value if ":" in value else f"{TOKEN_USER}:{value}"
    return base64.b64encode(pair.encode()).decode()


def git_env(cfg: GateConfig, state_dir: str, environ: dict[str, str] | None = None) -> dict[str, str]:
    """The environment of a git process that talks to the upstream."""
    environ = dict(os.environ if environ is None else environ)
    config: list[tuple[str, str]] = [("http.followRedirects", "false"), ("credential.helper", "")]
    ca = upstream_ca_path(state_dir)
    if cfg.upstream is None:
        raise GateError("this bottle's upstream is the operator's local repository: the gate never talks to it")
    if cfg.upstream.startswith("https://") and os.path.isfile(ca):
        config.append(("http.sslCAInfo", ca))
    if cfg.credentials_env:
        value = environ.get(cfg.credentials_env, "")
        if not value:
            raise GateError(
                f"${cfg.credentials_env} (git.credentials_env) is empty in the gate; export it before starting the bottle"
            )
        config.append((f"http.{cfg.upstream}.extraHeader", f"Authorization: Basic {basic_credential(value)}"))
    # Earlier GIT_CONFIG_* of the caller would shift our numbering: start from a clean slate.
    # GIT_QUARANTINE_PATH stays behind too: a local (file://) upstream's receive-pack would take
    # the pushing hook's quarantine for its own and refuse to move its refs.
    env = {k: v for k, v in environ.items() if not k.startswith("GIT_CONFIG_") and k != "GIT_QUARANTINE_PATH"}
    env.update(
        {
            "GIT_TERMINAL_PROMPT": "0",
            "GIT_CONFIG_NOSYSTEM": "1",
            "GIT_ASKPASS": "/bin/false",
            "GIT_CONFIG_COUNT": str(len(config)),
        }
    )
    for i, (key, value) in enumerate(config):
        env[f"GIT_CONFIG_KEY_{i}"] = key
        env[f"GIT_CONFIG_VALUE_{i}"] = value
    return env


def scrub(text: str, cfg: GateConfig, environ: dict[str, str] | None = None) -> str:
    """Upstream's words with the credential removed, should the upstream echo it."""
    environ = os.environ if environ is None else environ
    value = environ.get(cfg.credentials_env or "", "")
    if value:
        for form in (value, basic_credential(value)):
            text = text.replace(form, "[credential]")
    return text


def headline(output: str) -> str:
    """git's first fatal/error line (its later lines are advice), else its last line."""
    lines = [line.strip() for line in output.splitlines() if line.strip()]
    return next((line for line in lines if line.startswith(("fatal:", "error:"))), lines[-1] if lines else "no message")


@dataclass
class Result:
    ok: bool
    output: str
    seconds: float


def run_git(argv: list[str], env: dict[str, str], timeout: float, stdin: str | None = None) -> Result:
    start = time.monotonic()
    try:
        proc = subprocess.run(["git", *argv], env=env, input=stdin, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return Result(False, f"git {argv[0]} gave no answer within {timeout:g} s", time.monotonic() - start)
    output = (proc.stdout + proc.stderr).strip()
    return Result(proc.returncode == 0, output, time.monotonic() - start)


# With review on, upstream's branches are fetched here, beside the branches the agent is served
# (upstream's overlaid with the pushes held for the operator: held.py); hidden from the agent.
UPSTREAM_HEADS = "refs/upstream/heads/"


def fetch_argv(cfg: GateConfig, git_dir: str) -> list[str]:
    """Refresh the mirror: upstream's branches and tags become the gate's, removed ones go. With
    review on, the branches land in UPSTREAM_HEADS (held pushes must outlive a refresh)."""
    heads = UPSTREAM_HEADS if cfg.review else "refs/heads/"
    return [
        "--git-dir",
        git_dir,
        "fetch",
        "--quiet",
        "--prune",
        "--no-write-fetch-head",
        cfg.upstream,
        f"+refs/heads/*:{heads}*",
        "+refs/tags/*:refs/tags/*",
    ]


def push_argv(cfg: GateConfig, updates: list[RefUpdate]) -> list[str]:
    """Forward the agent's ref updates. Each carries a lease on the value the gate saw, so the
    gate never overwrites upstream commits it has not mirrored: a fast-forward, a force push or a
    delete goes through only when upstream still holds what the agent pushed against."""
    # All or nothing when a push moves several refs, so upstream never keeps half of one the gate refused.
    argv = ["push", "--porcelain", "--no-verify", *(["--atomic"] if len(updates) > 1 else [])]
    refspecs = []
    for u in updates:
        argv.append(f"--force-with-lease={u.ref}:{'' if u.created else u.old}")
        refspecs.append(f":{u.ref}" if u.deleted else f"{u.new}:{u.ref}")
    return [*argv, cfg.upstream, *refspecs]


def forward_argv(cfg: GateConfig, branch: str, new: str, lease: str | None) -> list[str]:
    """Forward one approved held push: ``new`` to upstream's ``branch``, only while upstream's
    branch is still ``lease`` (None: while it does not exist)."""
    ref = f"refs/heads/{branch}"
    return [
        "push",
        "--porcelain",
        "--no-verify",
        f"--force-with-lease={ref}:{lease or ''}",
        cfg.upstream,
        f"{new}:{ref}",
    ]
