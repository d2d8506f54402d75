"""DLP scan cost per request body: the egress engine (Hyperscan + re2 with gitleaks' semantics)
beside gitleaks' own Go library on the same inputs and rules.

Bodies of 1 KiB, 10 KiB, 100 KiB and 8 MiB of code/config/log text: "clean" (with a 32-digit
hex checksum every dozen lines or so, which gitleaks' decoder must look at), "plain" (no run that
could decode, so decoding passes are skipped) and "secret" (clean plus one GitHub token in the
middle), scanned through the request API (``RequestScanner.scan_body``) at the
CLI's decode depth (5, what egress runs) and at depth 0 (the library's default, which the
issue's prototype figures were measured at). Prints median and p99 per case. The rules and
the Hyperscan database come from the built sidecars image. The Go column needs Go on the host
(bench/gitleaks_go); without it that column is skipped with a line saying so.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "sidecars" / "egress"))
sys.path.insert(0, str(ROOT / "sidecars" / "common"))
sys.path.insert(0, str(ROOT))

import dlp  # noqa: E402
import dlp.request as dlp_request  # noqa: E402
from dlp import decode as dlp_decode  # noqa: E402
from dlp.codecs import RUN_CODECS, archive, compression  # noqa: E402
from dlp.codecs import text as dlp_text  # noqa: E402

from tests.support.dlp_corpus import _FILLER, ENCODERS  # noqa: E402

SIZES = [("1 KiB", 1024), ("10 KiB", 10 * 1024), ("100 KiB", 100 * 1024), ("8 MiB", 8 * 1024 * 1024)]
ROUNDS = {1024: 2000, 10 * 1024: 500, 100 * 1024: 200, 8 * 1024 * 1024: 6}
GO_ROUNDS = {1024: 200, 10 * 1024: 50, 100 * 1024: 20, 8 * 1024 * 1024: 1}
TOKEN = "ghp_" + "Zr8QwE2tY6uI0oP4aS8dF2gH6jK0lZ4xC8vB"


def rules_from_image(out: Path) -> Path:
    """The image's rules and database; the pinned copy in tests/support (database compiled
    here) when the image is not built."""
    from bottle_tui.backends.docker.images import image_refs

    ref = image_refs()["sidecars"]
    if subprocess.run(["docker", "image", "inspect", ref], capture_output=True).returncode != 0:
        print(f"sidecars image {ref} not built: using tests/support/gitleaks-v8.30.1.toml")
        return ROOT / "tests" / "support" / "gitleaks-v8.30.1.toml"
    name = f"bottle-tui-bench-dlp-{uuid.uuid4().hex[:6]}"
    subprocess.run(["docker", "create", "--name", name, ref], check=True, capture_output=True)
    try:
        for f in ("gitleaks.toml", "gitleaks.toml.hsdb"):
            subprocess.run(["docker", "cp", f"{name}:/opt/gitleaks/{f}", str(out / f)], check=True, capture_output=True)
    finally:
        subprocess.run(["docker", "rm", "-f", name], capture_output=True)
    return out / "gitleaks.toml"


def body(size: int, kind: str) -> bytes:
    rng = random.Random(size)
    filler = [f for f in _FILLER if kind != "plain" or "checksum" not in f]
    lines, total = [], 0
    while total < size:
        line = rng.choice(filler)
        lines.append(line)
        total += len(line.encode()) + 1
    text = "\n".join(lines).encode()[:size]
    if kind == "secret":
        mid = size // 2
        cut = text.rfind(b"\n", 0, mid) + 1
        ins = f"export GITHUB_TOKEN={TOKEN}\n".encode()
        text = (text[:cut] + ins + text[cut:])[:size]
    return text


def ms(samples: list[float]) -> tuple[float, float]:
    s = sorted(samples)
    return statistics.median(s) * 1e3, s[min(len(s) - 1, int(len(s) * 0.99))] * 1e3


_SCANNERS: dict = {}


def ours(rules_path: Path, depth: int, data: bytes, rounds: int) -> tuple[list[float], int]:
    if (rules_path, depth) not in _SCANNERS:
        rules = dlp.load_rules(rules_path)
        loaded = dlp.load_database(rules, dlp.database_path(rules_path)) or dlp.compile_database(rules)
        _SCANNERS[rules_path, depth] = dlp_request.RequestScanner(dlp.Scanner(rules, *loaded, max_decode_depth=depth))
    rs = _SCANNERS[rules_path, depth]
    headers = [("Content-Type", "text/plain")]
    verdict = rs.scan_body(data, headers)
    samples = []
    for _ in range(rounds):
        t0 = time.perf_counter()
        rs.scan_body(data, headers)
        samples.append(time.perf_counter() - t0)
    return samples, len(verdict.hits)


def go_binary(tmp: Path) -> Path | None:
    go = shutil.which("go")
    if not go:
        return None
    out = tmp / "gitleaks_go"
    r = subprocess.run(
        [go, "build", "-o", str(out), "."], cwd=ROOT / "bench" / "gitleaks_go", capture_output=True, text=True
    )
    if r.returncode != 0:
        print(f"gitleaks Go library: build failed, column skipped: {r.stderr.strip().splitlines()[-1:]}")
        return None
    return out


def theirs(binary: Path, depth: int, path: Path, rounds: int) -> tuple[list[float], int]:
    r = subprocess.run(
        [str(binary), "-depth", str(depth), "-rounds", str(rounds), str(path)],
        capture_output=True,
        text=True,
        check=True,
    )
    doc = json.loads(r.stdout.splitlines()[0])
    return doc["samples"], doc["findings"]


def decoder_costs(size: int = 100 * 1024) -> None:
    """Each decoder alone on ``size`` bytes of text: without a run of its kind (what the engine's
    prefilter saves: a decoder whose candidates do not match never runs) and with one run of
    its kind per ~2 KiB (what decoding costs when there is something to decode)."""
    clean = body(size, "plain")
    rng = random.Random(5)
    runs = {
        "base64": "base64",
        "hex": "hex-colon",
        "percent": "percent",
        "entities": "entities-dec",
        "qp": "qp",
        "escapes": "json-u",
        "text": None,
    }
    print(f"\ndecoders on {size // 1024} KiB of text (median):")
    print(f"  {'decoder':<14}{'prefilter, clean':>18}{'decode, clean':>16}{'decode, with runs':>19}")
    lines = clean.split(b"\n")
    for codec in RUN_CODECS:
        enc = runs.get(codec.NAME)
        mixed = list(lines)
        for i in range(0, len(mixed), 30):
            secret = "".join(rng.choice("abcdefghijklmnop0123456789") for _ in range(24)).encode()
            mixed[i] += b" v=" + (ENCODERS[enc](secret) if enc else secret.decode().encode("utf-16-le"))
        mixed_text = b"\n".join(mixed)
        pre = _median(lambda: dlp_decode.candidates(clean), 50)
        plain = _median(lambda c=codec: c.pieces(clean), 20)
        busy = _median(lambda c=codec, t=mixed_text: c.pieces(t), 20)
        print(f"  {codec.NAME:<14}{pre:>15.3f} ms{plain:>13.3f} ms{busy:>16.3f} ms", flush=True)
    import gzip
    import io
    import tarfile

    blob = gzip.compress(clean)
    tar = io.BytesIO()
    with tarfile.open(fileobj=tar, mode="w") as tf:
        info = tarfile.TarInfo("a.txt")
        info.size = len(clean)
        tf.addfile(info, io.BytesIO(clean))
    nonascii = clean.replace(b"e", "\u00e9".encode())
    for name, fn in (
        ("gzip inflate", lambda: compression.inflate("gzip", blob, 1 << 26)),
        ("gzip search", lambda: compression.embedded(nonascii, 1 << 26)),
        ("tar members", lambda: archive.members(tar.getvalue(), 1 << 26)),
        ("normalise", lambda: dlp_text.normalise(nonascii)),
    ):
        print(f"  {name:<14}{'':>18}{_median(fn, 20):>13.3f} ms")


def _median(fn, rounds: int) -> float:
    samples = []
    for _ in range(rounds):
        t0 = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - t0)
    return statistics.median(samples) * 1e3


def main() -> None:
    tmp = Path(tempfile.mkdtemp(prefix="bottle-bench-dlp-"))
    try:
        rules_path = rules_from_image(tmp)
        go = go_binary(tmp)
        if go is None and not shutil.which("go"):
            print("gitleaks Go library: no `go` on PATH, that column is skipped")
        # p99 on a shared machine mostly measures the neighbours: say how busy it was
        print(f"load average at start: {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
        for depth in (5, 0):
            print(
                f"\nDLP scan cost, decode depth {depth}"
                f"{' (egress; the gitleaks CLI default)' if depth else ' (gitleaks library default)'}:"
            )
            print(f"  {'body':<18}{'engine median':>14}{'p99':>10}{'gitleaks median':>17}{'p99':>10}{'speed-up':>10}")
            for label, size in SIZES:
                for kind in ("clean", "plain", "secret"):
                    data = body(size, kind)
                    f = tmp / f"body-{size}-{kind}.txt"
                    f.write_bytes(data)
                    s, n_ours = ours(rules_path, depth, data, ROUNDS[size])
                    med, p99 = ms(s)
                    name = f"{label} {kind}"
                    line = f"  {name:<18}{med:>11.3f} ms{p99:>7.3f} ms"
                    if go is not None:
                        g, n_go = theirs(go, depth, f, GO_ROUNDS[size])
                        gmed, gp99 = ms(g)
                        line += f"{gmed:>14.3f} ms{gp99:>7.3f} ms{gmed / med:>9.0f}x"
                        if (n_ours > 0) != (n_go > 0):
                            line += f"  (findings differ: engine {n_ours}, gitleaks {n_go})"
                    print(line, flush=True)
        decoder_costs()
        print(f"\nload average at end: {os.getloadavg()[0]:.1f}")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
