"""The proxy's lifecycle: load the policy at start, reload it on SIGHUP (bottle init forwards it
to every worker) and on every change, keep this worker's entry in the ready file that says egress
is up (bottle_contract.workers), and trust the operator's extra upstream CA bundle."""

from __future__ import annotations

import asyncio
import glob
import hashlib
import json
import logging
import os
import signal

from decisions import now_iso
from mitmproxy import ctx
from policy_store import PolicyStore, _stat_sig

from bottle_contract import ports, workers
from bottle_contract.files import atomic_write, locked

logger = logging.getLogger("egress")


class Lifecycle:
    def __init__(self, store: PolicyStore, also_reload=()):
        self.store = store
        # Other settings files reloaded with routes.yaml on SIGHUP (metering.json), each a callable.
        self.also_reload = tuple(also_reload)
        self._ca_sig: tuple[int, int, int] | None = None
        self._ca_option: str | None = None  # the trust bundle path this addon set, if any
        self.loads = 0  # policy loads of this worker (start, SIGHUP): hosts see a reload reach it
        self._own_ca_sig: tuple[int, int, int] | None = None  # the CA this worker signs with, as loaded

    def load(self, loader) -> None:
        os.makedirs(self.store.state_dir, exist_ok=True)
        # This worker's entry of an earlier run would lie (the other workers' stay theirs).
        self._update_ready(None)
        self.store.load_once_used()
        self.store.reload(force=True)
        self.loads += 1
        self._install_sighup()

    def running(self) -> None:
        self._install_sighup()
        self._own_ca_sig = _stat_sig(self._own_ca_path())
        self._apply_upstream_ca()
        self._write_ready()

    def done(self) -> None:
        self._update_ready(None)

    def _install_sighup(self) -> None:
        # mitmdump leaves SIGHUP at its default (terminate); bottle init sends it to ask for a reload.
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return
        loop.add_signal_handler(signal.SIGHUP, self.on_sighup)

    def on_sighup(self) -> None:
        logger.warning("egress: SIGHUP: reloading routes.yaml, metering.json and upstream trust")
        self.store.reload(force=True)
        self.loads += 1
        for reload in self.also_reload:
            reload()
        self._reload_own_ca()
        self._apply_upstream_ca()
        self._write_ready()

    def _own_ca_path(self) -> str:
        return os.path.join(os.path.expanduser(ctx.options.confdir), "mitmproxy-ca.pem")

    def _reload_own_ca(self) -> None:
        """A CA the host replaced (a claimed warm bottle gets its own): every certificate egress
        makes from now on is signed by it (mitmproxy builds its certificate store from confdir)."""
        sig = _stat_sig(self._own_ca_path())
        tls = ctx.master.addons.get("tlsconfig") if getattr(ctx, "master", None) else None
        if sig == self._own_ca_sig or tls is None:
            return
        tls.configure({"confdir"})
        self._own_ca_sig = sig
        logger.warning("egress: SIGHUP: signing with the new CA in confdir")

    def _update_ready(self, entry: dict | None, shared: dict | None = None) -> None:
        """Put this worker's ``entry`` (None: take it out) into the ready file, under the workers'
        lock; the file goes when no worker is left in it."""
        store = self.store
        path = store.ready_path
        try:
            os.makedirs(store.run_dir, mode=0o700, exist_ok=True)
            with locked(os.path.join(store.run_dir, workers.READY_LOCK)):
                try:
                    with open(path, encoding="utf-8") as f:
                        doc = json.load(f)
                except (OSError, ValueError):
                    doc = None
                if shared is None:
                    keep = ("listen_host", "listen_port", "ca_cert")
                    shared = {k: doc[k] for k in keep if isinstance(doc, dict) and k in doc}
                new = workers.ready_with(doc, store.worker, store.workers, entry, shared)
                if new["worker"]:
                    atomic_write(path, (json.dumps(new) + "\n").encode(), mode=0o644)
                else:
                    try:
                        os.unlink(path)
                    except FileNotFoundError:
                        pass
        except OSError as e:
            logger.warning(f"egress: cannot update {path}: {e}")

    def _write_ready(self) -> None:
        port = ctx.options.listen_port or ports.EGRESS
        host = ctx.options.listen_host or "0.0.0.0"
        ps = ctx.master.addons.get("proxyserver") if getattr(ctx, "master", None) else None
        if ps is not None:
            addrs = ps.listen_addrs()
            if addrs:
                host, port = addrs[0][0], addrs[0][1]
        entry = {
            "pid": os.getpid(),
            "routes_loaded": self.store.policy is not None,
            "routes_error": self.store.policy_error,
            "loads": self.loads,
            "ca_sha256": self._own_ca_fingerprint(),  # each worker signs with the CA it loaded
            "at": now_iso(),
        }
        shared = {
            "listen_host": host,
            "listen_port": port,
            "ca_cert": os.path.join(os.path.expanduser(ctx.options.confdir), "mitmproxy-ca-cert.pem"),
        }
        self._update_ready(entry, shared)

    @staticmethod
    def _own_ca_fingerprint() -> str | None:
        """SHA-256 of the CA certificate egress signs with (DER), so the host can tell it took a new one."""
        tls = ctx.master.addons.get("tlsconfig") if getattr(ctx, "master", None) else None
        store = getattr(tls, "certstore", None)
        return store.default_ca.fingerprint().hex() if store is not None else None

    def _apply_upstream_ca(self) -> None:
        """Trust state/upstream-ca.pem (e.g. a TLS-intercepting corporate proxy) for upstream TLS.

        mitmproxy's ssl_verify_upstream_trusted_ca replaces its default (certifi) trust, so the file
        is appended to certifi's bundle. The bundle's name carries its hash because mitmproxy caches
        TLS contexts by path.
        """
        path_ca = self.store.upstream_ca_path
        sig = _stat_sig(path_ca)
        if sig == self._ca_sig:
            return
        self._ca_sig = sig
        current = ctx.options.ssl_verify_upstream_trusted_ca
        if current and current != self._ca_option:
            return  # set explicitly on the command line: the operator's choice wins
        if sig is None:
            if self._ca_option:
                ctx.options.update(ssl_verify_upstream_trusted_ca=None)
                self._ca_option = None
            return
        import certifi  # a mitmproxy dependency

        with open(certifi.where(), "rb") as f:
            bundle = f.read()
        with open(path_ca, "rb") as f:
            extra = f.read()
        data = bundle.rstrip(b"\n") + b"\n" + extra
        state_dir = self.store.state_dir
        path = os.path.join(state_dir, f"upstream-trust-{hashlib.sha256(data).hexdigest()[:16]}.pem")
        if not os.path.exists(path):
            atomic_write(path, data, mode=0o644)
        ctx.options.update(ssl_verify_upstream_trusted_ca=path)
        self._ca_option = path
        for old in glob.glob(os.path.join(state_dir, "upstream-trust-*.pem")):
            if old != path:
                os.unlink(old)
        logger.info(f"egress: trusting {path_ca} for upstream TLS")
