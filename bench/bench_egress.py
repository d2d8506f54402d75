"""What the sidecar bundle costs: added latency of egress (+ DLP + credential injection) against
direct requests to the same fake-internet server, requests per second through one bundle, the
bundle's idle memory and both image sizes. Prints figures; asserts nothing about time.

Both paths are measured side by side in one run, from inside the bottle's sidecars container (the
only place that can reach the fake internet both directly and through egress): keep-alive HTTPS
POSTs of 1 KB and 100 KB to the route that injects a credential. Traffic stays on the machine:
the upstream is the tests' fake-internet container.

Two bottles run at once, one with a single egress worker (the anchor: egress as it was, one
process) and one with ``egress.workers: auto`` (one worker per CPU of the bundle); every figure is
printed for both, measured in turns in the same run. Requests per second are 8 keep-alive HTTPS
connections of 1 KB POSTs, through egress and directly with the same client; the CPU each process
used during the run (from /proc) says what bounds the figure: the client runs on the same cores.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.support.bottles import (
    AUTHED,
    SECRET,
    cli,
    connect_fake_internet,
    make_fake_pki,
    remove_fake_internet,
    run_fake_internet,
    start_bottle,
    stop_bottle,
    write_home,
)

ROUNDS = 400  # requests per size and path
RPS_SECONDS = 5.0
RPS_THREADS = 8
RPS_BODY = 1024
CORES = 2  # the machines of this workplace; the reasoned ceiling below is for this many

# Runs inside the sidecars container with its system python3 (stdlib only).
CLIENT = r"""
import http.client, json, os, ssl, statistics, sys, threading, time
host, rounds, rps_seconds, threads, key, rps_body = sys.argv[1], int(sys.argv[2]), float(sys.argv[3]), int(sys.argv[4]), sys.argv[5], int(sys.argv[6])
upstream_ca = "/state/egress/upstream-ca.pem"
egress_ca = "/state/egress/mitmproxy-ca-cert.pem"

def conn(via_egress):
    if via_egress:
        c = http.client.HTTPSConnection("127.0.0.1", 8080, context=ssl.create_default_context(cafile=egress_ca), timeout=30)
        c.set_tunnel(host, 443)
    else:
        c = http.client.HTTPSConnection(host, 443, context=ssl.create_default_context(cafile=upstream_ca), timeout=30)
    return c

def post(c, body, via_egress):
    # Through egress the client holds only a placeholder; egress injects the real key.
    c.request("POST", "/bench", body=body, headers={"X-Api-Key": "placeholder" if via_egress else key,
                                                    "Content-Type": "application/octet-stream"})
    r = c.getresponse()
    data = r.read()
    assert r.status == 200, (r.status, data[:200])

def latencies(size, via_egress):
    body = b"x" * size
    c = conn(via_egress)
    for _ in range(20):  # warm the connection and caches
        post(c, body, via_egress)
    out = []
    for _ in range(rounds):
        t = time.perf_counter()
        post(c, body, via_egress)
        out.append((time.perf_counter() - t) * 1000)
    c.close()
    return out

def pct(xs, p):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(p / 100 * (len(xs) - 1))))]

def workers():
    # The egress workers of this bundle: their pids, from /proc.
    out = {}
    for pid in os.listdir("/proc"):
        if pid.isdigit():
            try:
                with open(f"/proc/{pid}/cmdline", "rb") as f:
                    argv = f.read().split(b"\0")
                with open(f"/proc/{pid}/environ", "rb") as f:
                    env = dict(e.split(b"=", 1) for e in f.read().split(b"\0") if b"=" in e)
            except OSError:
                continue
            if any(a.endswith(b"egress/worker.py") for a in argv):
                out[int(pid)] = env.get(b"BOTTLE_EGRESS_WORKER", b"1").decode()
    return out

def ticks(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])  # utime + stime

def rps(via_egress):
    procs = workers()
    count = [0] * threads
    before = {p: ticks(p) for p in procs}
    me0 = os.times()
    t0 = time.monotonic()
    stop = t0 + rps_seconds
    def worker(i):
        c = conn(via_egress)
        body = b"x" * rps_body
        while time.monotonic() < stop:
            post(c, body, via_egress)
            count[i] += 1
    ts = [threading.Thread(target=worker, args=(i,)) for i in range(threads)]
    [t.start() for t in ts]
    [t.join() for t in ts]
    wall = time.monotonic() - t0
    me1 = os.times()
    hz = os.sysconf("SC_CLK_TCK")
    cpu = {procs[p]: (ticks(p) - before[p]) / hz / wall for p in procs} if via_egress else {}
    client = (me1.user + me1.system - me0.user - me0.system) / wall
    return {"rps": sum(count) / wall, "cpu": cpu, "client_cpu": client}

mode = sys.argv[7]
result = {}
if mode == "latency":
    for size in (1024, 100 * 1024):
        # Interleave the two paths so both see the same machine load.
        d1, e1 = latencies(size, False), latencies(size, True)
        d2, e2 = latencies(size, False), latencies(size, True)
        d, e = d1 + d2, e1 + e2
        result[size] = {"direct_median": statistics.median(d), "direct_p99": pct(d, 99),
                        "egress_median": statistics.median(e), "egress_p99": pct(e, 99)}
else:
    result["egress"] = rps(True)
    result["direct"] = rps(False)
print(json.dumps(result))
"""
VARIANTS = (("1 worker", "tester"), ("workers: auto", "wide"))
WIDE = {
    "agents/wide.md": "---\nbottle: wide\ndescription: the bench's agent with every egress worker\n---\nBench.\n",
}


def docker(*argv: str, input: str | None = None) -> str:
    r = subprocess.run(["docker", *argv], capture_output=True, text=True, input=input, timeout=600)
    if r.returncode != 0:
        raise SystemExit(f"docker {' '.join(argv[:3])} failed: {r.stderr.strip()[-500:]}")
    return r.stdout


def mib(text: str) -> float:
    value, unit = float(text[:-3]), text[-3:]
    return value * {"KiB": 1 / 1024, "MiB": 1.0, "GiB": 1024.0}.get(unit, 1.0)


def one_worker_home(home: Path) -> None:
    """The tests' sandbox bottle as two: ``sandbox`` with one egress worker, ``wide`` with auto."""
    sandbox = home / "bottles" / "sandbox.md"
    text = sandbox.read_text()
    assert "egress:\n  routes:" in text
    sandbox.write_text(text.replace("egress:\n  routes:", "egress:\n  workers: 1\n  routes:", 1))
    (home / "bottles" / "wide.md").write_text(
        text.replace("egress:\n  routes:", "egress:\n  workers: auto\n  routes:", 1)
    )
    for rel, body in WIDE.items():
        (home / rel).write_text(body)


def client(bottle, mode: str) -> dict:
    raw = docker(
        "exec",
        "-i",
        bottle.sidecars,
        "python3",
        "-",
        AUTHED,
        str(ROUNDS),
        str(RPS_SECONDS),
        str(RPS_THREADS),
        SECRET,
        str(RPS_BODY),
        mode,
        input=CLIENT,
    )
    return json.loads(raw.strip().splitlines()[-1])


def worker_count(bottle) -> int:
    status = json.loads(docker("exec", bottle.sidecars, "python3", "/opt/bottle/init/bottle_init.py", "status"))
    return sum(1 for d in status["daemons"].values() if d.get("group") == "egress")


def main() -> None:
    cli(Path(tempfile.gettempdir()), "images", "build")
    work = Path(tempfile.mkdtemp(prefix="bottle-bench-egress-"))
    pki = work / "pki"
    pki.mkdir()
    make_fake_pki(pki)
    home = write_home(work / "home")
    one_worker_home(home)
    env_ca = {"CLAUDE_BOTTLE_UPSTREAM_CA": str(pki / "ca.pem")}
    fake = run_fake_internet(pki)
    bottles: dict[str, object] = {}
    try:
        for label, agent in VARIANTS:
            bottles[label] = b = start_bottle(home, agent, env=env_ca)
            connect_fake_internet(b, fake)
        counts = {label: worker_count(b) for label, b in bottles.items()}
        lat: dict[str, list[dict]] = {label: [] for label in bottles}
        rps: dict[str, list[dict]] = {label: [] for label in bottles}
        for _ in range(2):  # in turns, so both see the same machine
            for label, b in bottles.items():
                lat[label].append(client(b, "latency"))
                rps[label].append(client(b, "rps"))
        for label in bottles:
            n = counts[label]
            print(f"--- egress with {label} ({n} worker{'s' if n > 1 else ''}) ---")
            for size, name in (("1024", "1 KB"), ("102400", "100 KB")):
                f = {k: min(r[size][k] for r in lat[label]) for k in lat[label][0][size]}
                print(
                    f"keep-alive HTTPS POST {name}: direct median {f['direct_median']:.2f} ms (p99 {f['direct_p99']:.2f}); "
                    f"through egress+DLP+injection median {f['egress_median']:.2f} ms (p99 {f['egress_p99']:.2f}); "
                    f"added median {f['egress_median'] - f['direct_median']:.2f} ms, p99 {f['egress_p99'] - f['direct_p99']:.2f} ms"
                    " (best of 2 turns)"
                )
            for i, r in enumerate(rps[label], 1):
                e, d = r["egress"], r["direct"]
                cpu = ", ".join(f"worker {w} {c * 100:.0f}%" for w, c in sorted(e["cpu"].items()))
                print(
                    f"turn {i}: {RPS_THREADS} keep-alive HTTPS clients, {RPS_BODY} B POSTs: {e['rps']:.0f} req/s through "
                    f"egress (CPU: {cpu}, client {e['client_cpu'] * 100:.0f}%); {d['rps']:.0f} req/s direct "
                    f"(client {d['client_cpu'] * 100:.0f}%)"
                )
                # CPU per request depends little on how loaded the machine is; wall figures do.
                egress_ms = sum(e["cpu"].values()) / max(e["rps"], 1e-9) * 1000
                client_ms = e["client_cpu"] / max(e["rps"], 1e-9) * 1000
                ceiling = min(n * 1000 / egress_ms, CORES * 1000 / (egress_ms + client_ms)) if egress_ms else 0
                print(
                    f"  CPU per request: egress {egress_ms:.2f} ms, the client {client_ms:.2f} ms "
                    f"(direct: the client {d['client_cpu'] / max(d['rps'], 1e-9) * 1000:.2f} ms); so on {CORES} idle "
                    f"cores shared with this client, at most {ceiling:.0f} req/s (reasoned from the CPU figures)"
                )
        docker("exec", next(iter(bottles.values())).agent, "true")
        time.sleep(3)  # let the bundles settle before reading idle memory
        for label, b in bottles.items():
            usage = docker("stats", "--no-stream", "--format", "{{.MemUsage}}", b.sidecars).split("/")[0].strip()
            print(f"idle memory of the sidecar bundle with {label}: {mib(usage):.0f} MiB (docker stats)")
    finally:
        for b in bottles.values():
            stop_bottle(b, fake)
        remove_fake_internet(fake)
    for name in ("agent", "sidecars"):
        size = int(docker("image", "inspect", "--format", "{{.Size}}", f"bottle-tui/{name}:latest").strip())
        print(f"image bottle-tui/{name}: {size / 1e6:.0f} MB")


if __name__ == "__main__":
    main()
