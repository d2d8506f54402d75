"""Image sizes and build times: the base, agent and sidecars images of this checkout (as the engine
reports them), then what a fresh machine does: debootstrap the base into a throwaway tag, and build
both images from it with no layer cache, side by side as `bottle-tui images build` does. Prints each
phase's wall time and each image's slowest steps. BENCH_IMAGES_BUILD=0 prints the sizes only.

The debootstrap takes the packages cached in images.DEBOOTSTRAP_CACHE by an earlier bootstrap on
this machine (a fresh machine fetches them); the builds fetch every package afresh (the new base
matches no cached layer)."""

from __future__ import annotations

import asyncio
import os
import re
import subprocess
import tempfile
import time
import uuid
from pathlib import Path

from bottle_tui.backends.docker import images

RUN = uuid.uuid4().hex[:6]
STEP = re.compile(r"^Step (\d+)/(\d+) : (.*)$")


def size_mb(ref: str) -> str:
    out = subprocess.run(
        ["docker", "image", "inspect", "--format", "{{.Size}}", ref], capture_output=True, text=True, check=False
    )
    return f"{int(out.stdout) / 1e6:,.0f} MB" if out.returncode == 0 else "(not built)"


Steps = list[tuple[float, str]]


async def timed_build(
    source: images.ImageSource, base: str, tag: str, build_args: dict[str, str], target: str | None = None
) -> tuple[float, Steps]:
    """Wall time of a build of ``source`` from ``base`` (a fresh base: no layer of an earlier build
    can match), and each step's time."""
    with images.build_context(source, images.extra_ca_bytes()) as ctx:
        argv = images.build_argv(source, ctx, base, "bench", [] if target else [tag], build_args, target)
        proc = await asyncio.create_subprocess_exec(
            *argv,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            stdin=asyncio.subprocess.DEVNULL,
            env={**os.environ, **images.BUILD_ENV},
        )
        assert proc.stdout
        steps: Steps = []
        t0 = last = time.perf_counter()
        current = ""
        tail: list[str] = []
        async for raw in proc.stdout:
            line = raw.decode(errors="replace").rstrip()
            tail = [*tail[-20:], line]
            if match := STEP.match(line):
                now = time.perf_counter()
                if current:
                    steps.append((now - last, current))
                current, last = match.group(3)[:90], now
        code = await proc.wait()
        end = time.perf_counter()
        steps.append((end - last, current))
    if code != 0:
        raise SystemExit(f"building {source.name} failed:\n" + "\n".join(tail))
    return end - t0, steps


async def image(source: images.ImageSource, base: str) -> tuple[float, Steps]:
    """One image as `images build` makes it: its prebuilt image (if any) side by side with its
    first stages, then the image."""
    t0 = time.perf_counter()
    args: dict[str, str] = {}
    steps: Steps = []
    pre = images.prebuilt(source)
    if pre is not None:
        (pre_s, pre_steps), (_, first) = await asyncio.gather(
            timed_build(pre.source, base, tag(pre.source.name), {}),
            timed_build(source, base, "", {}, target=pre.alongside),
        )
        print(f"  {pre.source.name} (beside the {source.name} stages up to {pre.alongside}): {pre_s:.0f} s")
        steps = [(t, f"{pre.source.name}: {what}") for t, what in pre_steps] + first
        args[pre.arg] = tag(pre.source.name)
    _, last = await timed_build(source, base, tag(source.name), args)
    return time.perf_counter() - t0, steps + last


def tag(name: str) -> str:
    return f"bottle-tui/bench-{name}:{RUN}"


async def fresh(base_tag: str) -> None:
    with tempfile.TemporaryDirectory(prefix="bench-images-") as tmp:
        cached = images.DEBOOTSTRAP_CACHE.is_dir() and any(images.DEBOOTSTRAP_CACHE.glob("*.deb"))
        t0 = time.perf_counter()
        await images.bootstrap_base(base_tag, Path(tmp) / "debootstrap.log")
        base_s = time.perf_counter() - t0
    print(
        f"base: debootstrap + slim + import {base_s:.0f} s "
        f"({'packages from the cache' if cached else 'packages fetched'}), {size_mb(base_tag)}"
    )
    sources = images.sources()
    t0 = time.perf_counter()
    results = await asyncio.gather(*(image(src, base_tag) for src in sources.values()))
    both = time.perf_counter() - t0
    print(f"both images, side by side, every layer new: {both:.0f} s")
    for name, (seconds, steps) in zip(sources, results, strict=True):
        print(f"  {name}: {seconds:.0f} s, {size_mb(tag(name))}; slowest steps:")
        for step_s, what in sorted(steps, reverse=True)[:5]:
            print(f"    {step_s:6.1f} s  {what}")
    print(f"fresh machine, images phase: {base_s + both:.0f} s (base, then both images)")


def main() -> None:
    refs = images.image_refs()
    print(f"this checkout's images: base {images.BASE_IMAGE} {size_mb(images.BASE_IMAGE)}", end="")
    for name, ref in refs.items():
        print(f", {name} {ref} {size_mb(ref)}", end="")
    print()
    if os.environ.get("BENCH_IMAGES_BUILD") == "0":
        return
    base_tag = tag("base")
    try:
        asyncio.run(fresh(base_tag))
    finally:
        remove_built_from(base_tag)


def docker(*argv: str) -> str:
    return subprocess.run(["docker", *argv], capture_output=True, text=True, check=False).stdout


def remove_built_from(base_tag: str) -> None:
    """Remove the throwaway base and every image built on it (the final images and the build
    stages' intermediate ones), children first; nobody else's images descend from it."""
    root = docker("image", "inspect", "--format", "{{.Id}}", base_tag).strip()
    if not root:
        return
    ids = docker("image", "ls", "-a", "-q", "--no-trunc").split()
    parent = dict(
        line.split() for line in docker("image", "inspect", "--format", "{{.Id}} {{.Parent}}x", *ids).splitlines()
    )
    children: dict[str, list[str]] = {}
    for image, of in parent.items():
        children.setdefault(of.removesuffix("x"), []).append(image)
    order: list[str] = []

    def visit(image: str) -> None:
        for child in children.get(image, []):
            visit(child)
        order.append(image)

    visit(root)
    for name in (*images.sources(), "gitleaks"):
        docker("image", "rm", tag(name))
    docker("image", "rm", base_tag)
    for image in order:
        docker("image", "rm", image)


if __name__ == "__main__":
    main()
