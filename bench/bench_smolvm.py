"""The smolvm backend's costs that do not need a booting VM: each wrapper call against the real
CLI (ls --json with 10 machines, create, delete), what smolvm discovery adds to `bottle-tui ls`,
and the preflight probe cold and cached. Prints figures; asserts nothing about time."""

from __future__ import annotations

import asyncio
import os
import shutil
import statistics
import tempfile
import time
from pathlib import Path

from bottle_tui.backends.smolvm import vm_lifecycle as lifecycle
from bottle_tui.backends.smolvm.install import find_smolvm
from bottle_tui.backends.smolvm.probe import CACHE_ENV, probe
from bottle_tui.backends.smolvm.smolvm_cli import Smolvm

MACHINES = 10
ROUNDS = 7


def ms(samples: list[float]) -> str:
    return f"median {statistics.median(samples) * 1000:.1f} ms (min {min(samples) * 1000:.1f}, max {max(samples) * 1000:.1f}, n={len(samples)})"


async def timed(coro_fn) -> float:
    t0 = time.perf_counter()
    await coro_fn()
    return time.perf_counter() - t0


async def main() -> None:
    folder = Path(tempfile.mkdtemp(prefix="bottle-bench-smolvm-"))
    os.environ[CACHE_ENV] = str(folder / "probe.json")
    smol = Smolvm(find_smolvm(), state_dir=folder / "state")
    try:
        version = ".".join(map(str, await smol.version()))
        print(f"smolvm {version} ({smol.binary})")
        creates = [
            await timed(
                lambda i=i: smol.machine_create(
                    name=f"claude-bottle-bench-{i}",
                    flags=["--cpus", "1", "--mem", "256"],
                    labels={"dev.bottle-tui.managed": "true", "dev.bottle-tui.slug": f"bench-{i}"},
                )
            )
            for i in range(MACHINES)
        ]
        print(f"machine create (no boot): {ms(creates)}")
        lists = [await timed(smol.machine_ls) for _ in range(ROUNDS)]
        print(f"machine ls --json with {MACHINES} machines: {ms(lists)}")
        joins = []
        for _ in range(ROUNDS):
            t0 = time.perf_counter()
            found = lifecycle.join([], await smol.machine_ls())
            joins.append(time.perf_counter() - t0)
        assert len(found) == MACHINES
        print(f"smolvm discovery (ls + join) added to `bottle-tui ls`: {ms(joins)}")
        deletes = [
            await timed(lambda i=i: smol.machine_delete(name=f"claude-bottle-bench-{i}")) for i in range(MACHINES)
        ]
        print(f"machine delete -f: {ms(deletes)}")
        t0 = time.perf_counter()
        cold = await probe(smol, version)
        cold_s = time.perf_counter() - t0
        cached = [await timed(lambda: probe(smol, version)) for _ in range(ROUNDS)]
        print(f"probe, cold (boots a VM): {cold_s:.1f} s -> {'boots' if cold.ok else 'cannot boot: ' + cold.reason}")
        print(f"probe, cached: {ms(cached)}")
    finally:
        shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    asyncio.run(main())
