"""What the sidecar bundle costs: added latency of egress (+ DLP + credential injection) against
direct requests to the same fake-internet server, requests per second through one bundle, the
bundle's idle memory and both image sizes. Prints figures; asserts nothing about time.

Both paths are measured side by side in one run, from inside the bottle's sidecars container (the
only place that can reach the fake internet both directly and through egress): keep-alive HTTPS
POSTs of 1 KB and 100 KB to the route that injects a credential. Traffic stays on the machine:
the upstream is the tests' fake-internet container.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
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

# Runs inside the sidecars container with its system python3 (stdlib only).
CLIENT = r"""
import http.client, json, ssl, statistics, sys, threading, time
host, rounds, rps_seconds, threads, key = sys.argv[1], int(sys.argv[2]), float(sys.argv[3]), int(sys.argv[4]), sys.argv[5]
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

result = {}
for size in (1024, 100 * 1024):
    # Interleave the two paths so both see the same machine load.
    d1, e1 = latencies(size, False), latencies(size, True)
    d2, e2 = latencies(size, False), latencies(size, True)
    d, e = d1 + d2, e1 + e2
    result[size] = {"direct_median": statistics.median(d), "direct_p99": pct(d, 99),
                    "egress_median": statistics.median(e), "egress_p99": pct(e, 99)}

count = [0] * threads
stop = time.monotonic() + rps_seconds
def worker(i):
    c = conn(True)
    body = b"x" * 256
    while time.monotonic() < stop:
        post(c, body, True)
        count[i] += 1
ts = [threading.Thread(target=worker, args=(i,)) for i in range(threads)]
[t.start() for t in ts]
[t.join() for t in ts]
result["rps"] = sum(count) / rps_seconds
print(json.dumps(result))
"""


def docker(*argv: str, input: str | None = None) -> str:
    r = subprocess.run(["docker", *argv], capture_output=True, text=True, input=input, timeout=600)
    if r.returncode != 0:
        raise SystemExit(f"docker {' '.join(argv[:3])} failed: {r.stderr.strip()[-500:]}")
    return r.stdout


def mib(text: str) -> float:
    value, unit = float(text[:-3]), text[-3:]
    return value * {"KiB": 1 / 1024, "MiB": 1.0, "GiB": 1024.0}.get(unit, 1.0)


def main() -> None:
    cli(Path(tempfile.gettempdir()), "images", "build")
    work = Path(tempfile.mkdtemp(prefix="bottle-bench-egress-"))
    pki = work / "pki"
    pki.mkdir()
    make_fake_pki(pki)
    home = write_home(work / "home")
    env_ca = {"CLAUDE_BOTTLE_UPSTREAM_CA": str(pki / "ca.pem")}
    fake = run_fake_internet(pki)
    bottle = None
    try:
        bottle = start_bottle(home, env=env_ca)
        connect_fake_internet(bottle, fake)
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
            input=CLIENT,
        )
        figures = json.loads(raw.strip().splitlines()[-1])
        for size, label in (("1024", "1 KB"), ("102400", "100 KB")):
            f = figures[size]
            print(
                f"keep-alive HTTPS POST {label}: direct median {f['direct_median']:.2f} ms (p99 {f['direct_p99']:.2f}); "
                f"through egress+DLP+injection median {f['egress_median']:.2f} ms (p99 {f['egress_p99']:.2f}); "
                f"added median {f['egress_median'] - f['direct_median']:.2f} ms, p99 {f['egress_p99'] - f['direct_p99']:.2f} ms"
            )
        print(
            f"requests per second through one bundle ({RPS_THREADS} keep-alive clients, 256 B POSTs): {figures['rps']:.0f}"
        )
        docker("exec", bottle.agent, "true")
        import time

        time.sleep(3)  # let the bundle settle before reading idle memory
        usage = docker("stats", "--no-stream", "--format", "{{.MemUsage}}", bottle.sidecars).split("/")[0].strip()
        print(f"idle memory of the sidecar bundle: {mib(usage):.0f} MiB (docker stats)")
    finally:
        if bottle is not None:
            stop_bottle(bottle, fake)
        remove_fake_internet(fake)
    for name in ("agent", "sidecars"):
        size = int(docker("image", "inspect", "--format", "{{.Size}}", f"bottle-tui/{name}:latest").strip())
        print(f"image bottle-tui/{name}: {size / 1e6:.0f} MB")


if __name__ == "__main__":
    main()
