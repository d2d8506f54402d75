#!/usr/bin/env python3
"""git-gate: the agent's only git remote. Serves a mirror of the bottle's upstream over smart HTTP
(``git http-backend`` as CGI) on the internal network only; refreshes the mirror from upstream
before each fetch or push (bounded); pushes go through the pre-receive hook (pre_receive.py).

Usage: gate.py [STATE_DIR]   (default /state/git-gate, holding gate.json as the host rendered it)
"""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler

# Imported through the daemon's pythonpath (daemons.json): its own folder and the contract.
from held import HIDDEN, act_on_decisions, overlay
from push_policy import GateConfig, GateError, load_config
from upstream_git import fetch_argv, git_env, headline, run_git, scrub

from bottle_contract import layout
from bottle_contract.files import atomic_write
from bottle_contract.serving import GIT_GATE_LIMITS, BoundedHTTPServer

HERE = os.path.dirname(os.path.realpath(__file__))

HOOKS_DIR = os.path.join(HERE, "hooks")
SERVICES = ("git-upload-pack", "git-receive-pack")
RESOLVE_TIMEOUT = 30.0
# How often the queue folder is looked at for decisions on held pushes, and the wait after upstream
# could not be reached to forward one.
FORWARD_POLL = 0.5
FORWARD_RETRY = 10.0
_PROTOCOL_RE = re.compile(r"^[A-Za-z0-9=:._-]{0,200}$")


def log(msg: str) -> None:
    print(f"git-gate: {msg}", file=sys.stderr, flush=True)


def pkt_line(text: str) -> bytes:
    data = text.encode()
    return f"{len(data) + 4:04x}".encode() + data


class Mirror:
    """The bare repository the agent fetches from and pushes to, kept in step with upstream."""

    def __init__(self, cfg: GateConfig, state_dir: str):
        self.cfg = cfg
        self.state_dir = state_dir
        self.root = os.path.join(state_dir, layout.MIRROR)
        self.git_dir = os.path.join(state_dir, layout.mirror_git_dir(cfg.repo))
        # Refs move under this lock only: a refresh and a push never interleave.
        self.lock = threading.Lock()
        self.synced = False
        self.last_refresh_ok_started = float("-inf")
        self.last_error = "not mirrored yet"

    def create(self) -> None:
        if self.cfg.local and not os.path.isdir(self.git_dir):
            # The host clones the operator's repository here before the bundle starts.
            raise GateError(f"no mirror at {self.git_dir}: the host makes it at bring-up; start the bottle again")
        if not os.path.isdir(self.git_dir):
            os.makedirs(self.root, exist_ok=True)
            self._git("init", "--quiet", "--bare", self.git_dir)
        for key, value in (
            ("http.receivepack", "true"),
            ("http.uploadpack", "true"),
            ("core.hooksPath", HOOKS_DIR),
            ("receive.fsckObjects", "true"),
            ("uploadpack.allowFilter", "true"),
            # No detached background gc racing the gate's own ref updates; a bottle's life is short.
            ("gc.auto", "0"),
        ):
            self._git("--git-dir", self.git_dir, "config", key, value)
        if self.holds_for_upstream:
            self._git("--git-dir", self.git_dir, "config", "--unset-all", "transfer.hideRefs", check=False)
            for hidden in HIDDEN:
                self._git("--git-dir", self.git_dir, "config", "--add", "transfer.hideRefs", hidden)
        self._git("--git-dir", self.git_dir, "symbolic-ref", "HEAD", f"refs/heads/{self.cfg.branch}")
        # A mirror left by an earlier run of the gate (restarted by init) is served while upstream is away.
        self.synced = bool(self._git("--git-dir", self.git_dir, "for-each-ref", "--count=1"))

    @property
    def holds_for_upstream(self) -> bool:
        """Review on with an https upstream: held pushes wait in the mirror (held.py)."""
        return self.cfg.review and not self.cfg.local

    def _git(self, *argv: str, check: bool = True) -> str:
        return subprocess.run(["git", *argv], check=check, capture_output=True, text=True, timeout=60).stdout.strip()

    def _fetch(self, env: dict[str, str], bound: float) -> bool:
        """Fetch upstream into the mirror (the lock held); with held pushes, lay them over it."""
        result = run_git(fetch_argv(self.cfg, self.git_dir), env, bound)
        if not result.ok:
            self.last_error = f"upstream not reachable: cannot fetch {self.cfg.upstream}: {headline(scrub(result.output, self.cfg))[:300]}"
            return False
        if self.holds_for_upstream:
            overlay(self.git_dir)
        if not self.synced:
            log(f"mirrored {self.cfg.upstream} in {result.seconds:.2f} s")
        self.synced = True
        return True

    def act_on_decisions(self) -> bool:
        """Forward approved held pushes upstream and drop rejected ones; False when upstream could
        not be reached (tried again later)."""
        with self.lock:
            try:
                env = git_env(self.cfg, self.state_dir)
            except GateError as e:
                log(str(e))
                return False
            reached = True

            def fetch() -> bool:
                nonlocal reached
                reached = self._fetch(env, self.cfg.refresh_timeout_seconds)
                return reached

            done = act_on_decisions(self.git_dir, self.cfg, self.state_dir, env, fetch)
            if done:
                log(f"acted on {done} decision(s) on held pushes")
            return reached

    def refresh(self, why: str) -> bool:
        """Fetch upstream into the mirror (bounded); True when the mirror can be served."""
        if self.cfg.local:
            # The operator's repository is the host's alone: the mirror is what the host made of it.
            return self.synced
        asked = time.monotonic()
        # A request waits at most the refresh bound for another refresh (the first mirror of a
        # large repository can take minutes): then it is served what the mirror holds, or told.
        if not self.lock.acquire(timeout=self.cfg.refresh_timeout_seconds):
            if not self.synced:
                self.last_error = f"upstream not mirrored yet: the first fetch of {self.cfg.upstream} is still running; try again in a minute"
            return self.synced
        try:
            # Requests that queued behind a refresh begun after they arrived share its result:
            # it saw upstream at least as fresh as they need.
            if self.synced and self.last_refresh_ok_started >= asked:
                return True
            started = time.monotonic()
            try:
                env = git_env(self.cfg, self.state_dir)
            except GateError as e:
                self.last_error = str(e)
                log(str(e))
                return self.synced
            bound = self.cfg.refresh_timeout_seconds if self.synced else self.cfg.first_mirror_timeout_seconds
            if self._fetch(env, bound):
                self.last_refresh_ok_started = started
                return True
            log(f"{self.last_error} ({why}; serving {'the last mirror' if self.synced else 'nothing yet'})")
            return self.synced
        finally:
            self.lock.release()


class Handler(BaseHTTPRequestHandler):
    server_version = "git-gate"
    mirror: Mirror  # set on the subclass the server uses

    def log_message(self, fmt: str, *args: object) -> None:
        log(f"{self.address_string()} {fmt % args}")

    def _plain(self, code: int, text: str) -> None:
        body = (text.rstrip("\n") + "\n").encode()
        self.send_response(code)
        self.send_header("Content-Type", "text/plain; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _route(self) -> tuple[str, str] | None:
        """(service, path_info) for the smart-HTTP URLs of the one repository the gate serves."""
        path, _, query = self.path.partition("?")
        prefix = f"/{self.mirror.cfg.repo}.git/"
        if not path.startswith(prefix):
            return None
        rest = path[len(prefix) :]
        if self.command == "GET" and rest == "info/refs":
            service = dict(p.partition("=")[::2] for p in query.split("&") if p).get("service", "")
            return (service, path) if service in SERVICES else None
        if self.command == "POST" and rest in SERVICES:
            return rest, path
        return None

    def do_GET(self) -> None:
        self._serve()

    def do_POST(self) -> None:
        self._serve()

    def _serve(self) -> None:
        route = self._route()
        if route is None:
            url = f"http://{self.mirror.cfg.listen_alias}:{self.mirror.cfg.port}/{self.mirror.cfg.repo}.git"
            self._plain(404, f"git-gate: only the smart HTTP protocol of {url} is served here")
            return
        service, path_info = route
        if self.command == "GET":
            # The start of every clone, fetch and push: show the agent what upstream has now.
            if not self.mirror.refresh(f"{service} by {self.client_address[0]}"):
                self._advertise_error(service, f"git-gate: {self.mirror.last_error}")
                return
        if service == "git-receive-pack" and self.command == "POST":
            with self.mirror.lock:
                self._cgi(path_info)
        else:
            self._cgi(path_info)

    def _advertise_error(self, service: str, message: str) -> None:
        """A smart-HTTP ERR packet: the agent's git prints it as `fatal: remote error: ...`."""
        body = pkt_line(f"# service={service}\n") + b"0000" + pkt_line(f"ERR {message}")
        self.send_response(200)
        self.send_header("Content-Type", f"application/x-{service}-advertisement")
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-cache")
        self.end_headers()
        self.wfile.write(body)

    def _body_chunks(self):
        """The request body as it arrives: Content-Length or chunked (git sends big pushes chunked)."""
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            while True:
                size_line = self.rfile.readline(1024)
                size = int(size_line.split(b";", 1)[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline(1024) not in (b"\r\n", b"\n", b""):
                        pass
                    return
                remaining = size
                while remaining:
                    chunk = self.rfile.read(min(remaining, 65536))
                    if not chunk:
                        return
                    remaining -= len(chunk)
                    yield chunk
                self.rfile.readline(8)
        else:
            remaining = int(self.headers.get("Content-Length") or 0)
            while remaining > 0:
                chunk = self.rfile.read(min(remaining, 65536))
                if not chunk:
                    return
                remaining -= len(chunk)
                yield chunk

    def _cgi(self, path_info: str) -> None:
        cfg = self.mirror.cfg
        _, _, query = self.path.partition("?")
        # The hook gets the credential (to push upstream) and nothing git would read as settings.
        env = {k: v for k, v in os.environ.items() if k == cfg.credentials_env or not k.startswith(("GIT_", "HTTP_"))}
        env.update(
            {
                "GIT_PROJECT_ROOT": self.mirror.root,
                "GIT_HTTP_EXPORT_ALL": "1",
                "GIT_CONFIG_NOSYSTEM": "1",
                "GIT_GATE_STATE": self.mirror.state_dir,
                "REQUEST_METHOD": self.command,
                "PATH_INFO": path_info,
                "QUERY_STRING": query,
                "CONTENT_TYPE": self.headers.get("Content-Type", ""),
                "REMOTE_ADDR": self.client_address[0],
                "REMOTE_USER": "agent",
                "GATEWAY_INTERFACE": "CGI/1.1",
                "SERVER_PROTOCOL": "HTTP/1.0",
            }
        )
        if self.headers.get("Content-Encoding"):
            env["HTTP_CONTENT_ENCODING"] = self.headers["Content-Encoding"]
        protocol = self.headers.get("Git-Protocol", "")
        if protocol and _PROTOCOL_RE.match(protocol):
            env["GIT_PROTOCOL"] = protocol
        if self.headers.get("Content-Length") and "chunked" not in self.headers.get("Transfer-Encoding", "").lower():
            env["CONTENT_LENGTH"] = self.headers["Content-Length"]
        proc = subprocess.Popen(["git", "http-backend"], env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE)

        def feed() -> None:
            try:
                for chunk in self._body_chunks():
                    proc.stdin.write(chunk)
            except (BrokenPipeError, ValueError, OSError):
                pass
            finally:
                try:
                    proc.stdin.close()
                except OSError:
                    pass

        feeder = threading.Thread(target=feed, daemon=True)
        feeder.start()
        try:
            status, headers = 200, []
            while True:
                line = proc.stdout.readline()
                if line in (b"\r\n", b"\n", b""):
                    break
                name, _, value = line.decode("latin-1").partition(":")
                if name.lower() == "status":
                    status = int(value.strip().split()[0])
                else:
                    headers.append((name.strip(), value.strip()))
            self.send_response(status)
            for name, value in headers:
                self.send_header(name, value)
            self.end_headers()
            shutil.copyfileobj(proc.stdout, self.wfile, 65536)
        except (BrokenPipeError, ConnectionResetError):
            pass
        finally:
            proc.stdout.close()
            feeder.join(timeout=5)
            proc.wait()
            self.close_connection = True


def listen_address(alias: str) -> str:
    """The address of this container on the internal network: what the alias resolves to here.
    Binding it (not 0.0.0.0) keeps the gate off the egress network."""
    deadline = time.monotonic() + RESOLVE_TIMEOUT
    while True:
        try:
            return socket.gethostbyname(alias)
        except OSError as e:
            if time.monotonic() > deadline:
                raise GateError(
                    f"cannot resolve {alias!r} to this container's internal address ({e}); is the sidecars container on the internal network with that alias?"
                ) from None
            time.sleep(0.2)


def follow_decisions(mirror: Mirror) -> None:
    """Act on the operator's decisions on held pushes as they are made: the queue folder is
    looked at every FORWARD_POLL seconds and read only when it changed (a decision rewrites a
    file in it); an unreachable upstream is tried again after FORWARD_RETRY seconds."""
    folder = layout.sibling_queue(mirror.state_dir)
    seen: int | None = None
    while True:
        time.sleep(FORWARD_POLL)
        try:
            stamp = os.stat(folder).st_mtime_ns
        except OSError:
            continue
        if stamp == seen:
            continue
        try:
            reached = mirror.act_on_decisions()
        except (OSError, subprocess.SubprocessError, ValueError, KeyError) as e:
            log(f"acting on decisions on held pushes failed: {type(e).__name__}: {e}")
            reached = False
        seen = stamp if reached else None
        if not reached:
            time.sleep(FORWARD_RETRY)


def write_ready(state_dir: str, info: dict) -> None:
    atomic_write(os.path.join(state_dir, "ready"), json.dumps(info) + "\n", mode=0o644)


def main(argv: list[str]) -> int:
    state_dir = argv[0] if argv else "/state/git-gate"
    try:
        os.unlink(os.path.join(state_dir, "ready"))  # a ready file of an earlier run would lie
    except FileNotFoundError:
        pass
    try:
        cfg = load_config(os.path.join(state_dir, "gate.json"))
        mirror = Mirror(cfg, state_dir)
        mirror.create()
        host = os.environ.get("GIT_GATE_LISTEN") or listen_address(cfg.listen_alias)
        handler = type("GateHandler", (Handler,), {"mirror": mirror})
        # Bounded threads, connections and time: no agent can take the bundle's pids (or the gate) away.
        server = BoundedHTTPServer((host, cfg.port), handler, GIT_GATE_LIMITS, name="git-gate")
    except GateError as e:
        log(str(e))
        return 2
    except (OSError, subprocess.SubprocessError) as e:
        log(f"cannot start: {e}")
        return 2
    # The first mirror is taken in the background: the gate answers at once, and a fetch that
    # arrives meanwhile waits for it under the mirror's lock.
    if not cfg.local:
        threading.Thread(target=mirror.refresh, args=("start",), daemon=True).start()
    if mirror.holds_for_upstream:
        threading.Thread(target=follow_decisions, args=(mirror,), daemon=True).start()
    write_ready(state_dir, {"address": host, "port": cfg.port, "repo": cfg.repo, "pid": os.getpid()})
    upstream = cfg.upstream or "the operator's local repository (mirrored by the host)"
    mode = "; pushes are held for the operator's review" if cfg.review else ""
    log(f"serving {upstream} as http://{cfg.listen_alias}:{cfg.port}/{cfg.repo}.git on {host}{mode}")
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
