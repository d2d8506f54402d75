"""Build the agent and sidecar-bundle images with no image registry reachable.

The base image is taken from the engine, pulled when possible, or bootstrapped from Debian
packages (debootstrap, slimmed as Debian's own slim images are, then ``docker import``). The host's
extra CA bundle is trusted during builds. Each image is tagged with a hash of its inputs, so it is
rebuilt only when they change.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import re
import shutil
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from ...errors import BottleError
from ...runner import CommandError, run
from . import engine, labels

SUITE = "bookworm"
# Bump when the bootstrapped base changes (what slim_rootfs removes or configures): the tag is new,
# so an engine holding an older base (another checkout's, maybe) bootstraps this one beside it.
BASE_RECIPE = "2"
BASE_IMAGE = f"bottle-tui/base:{SUITE}-{BASE_RECIPE}"
UPSTREAM_BASE = "debian:bookworm-slim"
# debootstrap keeps the packages it fetched here and, next time, takes those whose checksum the
# mirror's index still lists (a package the mirror has updated since is fetched again): a machine
# without this folder does what any fresh machine does.
DEBOOTSTRAP_CACHE = Path("/var/cache/bottle-tui/debootstrap")
REPO_ROOT = Path(__file__).resolve().parents[3]
EXTRA_CA_ENV = ("CLAUDE_BOTTLE_EXTRA_CA", "SSL_CERT_FILE", "REQUESTS_CA_BUNDLE", "PIP_CERT")
UPSTREAM_CA_ENV = "CLAUDE_BOTTLE_UPSTREAM_CA"
# Set (to anything) to keep earlier builds' tags: several checkouts sharing one engine would
# otherwise untag each other's images.
KEEP_OLD_IMAGES_ENV = "CLAUDE_BOTTLE_KEEP_OLD_IMAGES"
SYSTEM_CA_BUNDLE = Path("/etc/ssl/certs/ca-certificates.crt")

# Bump when how images are built changes in a way their files do not show (build args, labels).
BUILD_RECIPE = "2"

Progress = Callable[[str], None]


@dataclass(frozen=True)
class ImageSource:
    name: str  # "agent" | "sidecars" | "gitleaks"
    context: Path

    @property
    def repository(self) -> str:
        return f"bottle-tui/{self.name}"


def sources() -> dict[str, ImageSource]:
    return {name: ImageSource(name, REPO_ROOT / name) for name in ("agent", "sidecars")}


@dataclass(frozen=True)
class Prebuilt:
    """An image that another image's build copies from, built side by side with that build's
    first stages: the engine's builder runs the stages of one Dockerfile one after another."""

    source: ImageSource
    arg: str  # the build arg that names it to the other build
    alongside: str  # the other Dockerfile's stage built meanwhile (with all stages before it)


def prebuilt(source: ImageSource) -> Prebuilt | None:
    if source.name == "sidecars":  # gitleaks, compiled from Go: most of the sidecars' build time
        return Prebuilt(ImageSource("gitleaks", source.context / "gitleaks"), "GITLEAKS_IMAGE", "venvs")
    return None


def extra_ca_path() -> Path | None:
    """The extra CA bundle the host trusts (a TLS-intercepting proxy's CA, say), if any."""
    for var in EXTRA_CA_ENV:
        value = os.environ.get(var)
        if value and Path(value).is_file():
            return Path(value)
    return None


def extra_ca_bytes() -> bytes:
    path = extra_ca_path()
    return path.read_bytes() if path else b""


def upstream_ca_bundle() -> bytes:
    """What egress trusts upstream besides its own default store: the system bundle, the extra CA,
    and ``CLAUDE_BOTTLE_UPSTREAM_CA`` (a private CA of internal services; not used in builds)."""
    parts: list[bytes] = []
    upstream = os.environ.get(UPSTREAM_CA_ENV)
    if upstream and not Path(upstream).is_file():
        raise BottleError(f"{UPSTREAM_CA_ENV}={upstream}: no such file; point it at a PEM bundle or unset it")
    for path in (SYSTEM_CA_BUNDLE, extra_ca_path(), Path(upstream) if upstream else None):
        if path and path.is_file():
            data = path.read_bytes()
            if data not in parts:
                parts.append(data)
    return b"\n".join(parts)


def _context_files(context: Path) -> list[Path]:
    return sorted(
        p for p in context.rglob("*") if p.is_file() and "__pycache__" not in p.parts and not p.name.endswith(".pyc")
    )


def input_hash(source: ImageSource, extra_ca: bytes, base_ref: str = BASE_IMAGE) -> str:
    """Hash of everything that goes into an image build: its files, the extra CA and the base."""
    if not source.context.is_dir():
        raise BottleError(f"image source {source.context} is missing: reinstall bottle-tui from its source tree")
    digest = hashlib.sha256()
    digest.update(f"recipe={BUILD_RECIPE}\nbase={base_ref}\n".encode())
    digest.update(hashlib.sha256(extra_ca).digest())
    for path in _context_files(source.context):
        digest.update(str(path.relative_to(source.context)).encode() + b"\0")
        digest.update(hashlib.sha256(path.read_bytes()).digest())
    return digest.hexdigest()


def _tag(source: ImageSource, full_hash: str) -> str:
    return f"{source.repository}:{full_hash[:12]}"


def image_refs() -> dict[str, str]:
    ca = extra_ca_bytes()
    return {name: _tag(src, input_hash(src, ca)) for name, src in sources().items()}


async def image_exists(ref: str) -> bool:
    result = await run(["docker", "image", "inspect", "--format", "{{.Id}}", ref], check=False, timeout=30)
    return result.returncode == 0


def _host_debian_mirror() -> str | None:
    """The Debian mirror the host's apt uses, so the bootstrap goes where the host already goes."""
    candidates = [Path("/etc/apt/sources.list"), *sorted(Path("/etc/apt/sources.list.d").glob("*"))]
    for path in candidates:
        try:
            text = path.read_text()
        except OSError:
            continue
        for match in re.finditer(r"^(?:URIs:\s*|deb\s+(?:\[[^\]]*\]\s+)?)(\S+)", text, re.M):
            uri = match.group(1)
            if uri.startswith("http") and "security" not in uri:
                return uri
    return None


async def ensure_base(progress: Progress, log: Path) -> str:
    if await image_exists(BASE_IMAGE):
        return BASE_IMAGE
    if await image_exists(UPSTREAM_BASE):
        await run(["docker", "tag", UPSTREAM_BASE, BASE_IMAGE])
        return BASE_IMAGE
    progress(f"base image: pulling {UPSTREAM_BASE}")
    pulled = await run(["docker", "pull", "-q", UPSTREAM_BASE], check=False, timeout=300)
    if pulled.returncode == 0:
        await run(["docker", "tag", UPSTREAM_BASE, BASE_IMAGE])
        return BASE_IMAGE
    progress("base image: no registry answered; bootstrapping Debian with debootstrap (about a minute)")
    if shutil.which("debootstrap") is None:
        raise BottleError(
            "building the base image needs debootstrap: run `make engine` (or `apt-get install debootstrap`) and try again"
        )
    if os.geteuid() != 0:
        raise BottleError(
            f"bootstrapping the base image needs root: run `sudo bottle-tui images build` once, or load {UPSTREAM_BASE} into the engine"
        )
    await bootstrap_base(BASE_IMAGE, log)
    return BASE_IMAGE


async def bootstrap_base(tag: str, log: Path) -> None:
    """Bootstrap Debian (debootstrap), slim the tree and import it as the image ``tag``."""
    with tempfile.TemporaryDirectory(prefix="bottle-rootfs-") as tmp:
        rootfs = Path(tmp) / "rootfs"
        DEBOOTSTRAP_CACHE.mkdir(parents=True, exist_ok=True)
        # flock: two checkouts bootstrapping at once must not write the same cached package.
        argv = ["flock", str(DEBOOTSTRAP_CACHE / ".lock"), "debootstrap", "--variant=minbase"]
        argv += [f"--cache-dir={DEBOOTSTRAP_CACHE}", SUITE, str(rootfs)]
        mirror = _host_debian_mirror()
        if mirror:
            argv.append(mirror)
        try:
            result = await run(argv, timeout=1800)
        except CommandError as exc:
            _append(log, f"$ {' '.join(argv)}\n{exc.stderr}\n")
            raise BottleError(f"debootstrap failed ({exc}); the full output is in {log}") from exc
        _append(log, result.stdout + result.stderr)
        await asyncio.to_thread(slim_rootfs, rootfs)
        await _import_rootfs(rootfs, tag)


# What Debian's own slim images leave out, for every package installed later too: documentation
# (but each package's copyright), manuals and translations. Nothing in a bottle reads them. And, as
# in those images, dpkg does not fsync each file it unpacks: a build that dies is started again.
DPKG_EXCLUDES = """\
force-unsafe-io
path-exclude /usr/share/doc/*
path-include /usr/share/doc/*/copyright
path-exclude /usr/share/man/*
path-exclude /usr/share/groff/*
path-exclude /usr/share/info/*
path-exclude /usr/share/lintian/*
path-exclude /usr/share/linda/*
path-exclude /usr/share/locale/*
"""
# apt in an image build: no recommends, no translations, and no downloaded packages or caches
# left in the layer (an image's apt-get install otherwise keeps every .deb it fetched).
APT_CONFIG = """\
APT::Install-Recommends "false";
APT::Install-Suggests "false";
Acquire::Languages "none";
Dir::Cache::pkgcache "";
Dir::Cache::srcpkgcache "";
DPkg::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb || true"; };
"""


def slim_rootfs(rootfs: Path) -> None:
    """Make a bootstrapped tree the small base image: drop what DPKG_EXCLUDES keeps out of later
    installs, the package lists and the packages debootstrap fetched (each image build runs
    ``apt-get update`` itself), and configure dpkg and apt as above."""
    share = rootfs / "usr/share"
    for folder in ("man", "groff", "info", "lintian", "linda", "locale"):
        _empty(share / folder)
    for package in (share / "doc").glob("*"):
        if package.is_dir() and not package.is_symlink():
            for entry in package.iterdir():
                if entry.name != "copyright":
                    _remove(entry)
        else:
            _remove(package)
    for folder in ("var/lib/apt/lists", "var/cache/apt/archives"):
        _empty(rootfs / folder, keep=("partial", "lock"))
    for leftover in [*(rootfs / "var/cache/apt").glob("*.bin"), *(rootfs / "var/log").rglob("*.log")]:
        leftover.unlink()
    (rootfs / "etc/dpkg/dpkg.cfg.d/bottle-tui-slim").write_text(DPKG_EXCLUDES)
    (rootfs / "etc/apt/apt.conf.d/bottle-tui-slim").write_text(APT_CONFIG)


def _empty(folder: Path, keep: tuple[str, ...] = ()) -> None:
    if folder.is_dir():
        for entry in folder.iterdir():
            if entry.name not in keep:
                _remove(entry)


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    else:
        path.unlink()


async def _import_rootfs(rootfs: Path, tag: str) -> None:
    """Pack the bootstrapped tree and import it as the base image (both through the one runner)."""
    archive = rootfs.parent / "rootfs.tar"
    await run(["tar", "-C", str(rootfs), "-cf", str(archive), "."], timeout=600)
    try:
        await run(["docker", "import", str(archive), tag], timeout=600)
    except CommandError as exc:
        raise BottleError(f"importing the base image into docker failed: {exc}") from exc


def _append(log: Path, text: str) -> None:
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("a") as fh:
        fh.write(text)


# The engine's own builder: a client without the buildx plugin (as here) has no BuildKit.
BUILD_ENV = {"DOCKER_BUILDKIT": "0"}


@contextlib.contextmanager
def build_context(source: ImageSource, extra_ca: bytes) -> Iterator[Path]:
    """A copy of the image's folder (no bytecode) with the extra CA bundle as ``extra-ca.crt``."""
    with tempfile.TemporaryDirectory(prefix=f"bottle-{source.name}-ctx-") as tmp:
        ctx = Path(tmp)
        shutil.copytree(source.context, ctx, dirs_exist_ok=True, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        (ctx / "extra-ca.crt").write_bytes(extra_ca)
        yield ctx


def build_argv(
    source: ImageSource,
    ctx: Path,
    base: str,
    full_hash: str,
    tags: list[str],
    build_args: dict[str, str] | None = None,
    target: str | None = None,
) -> list[str]:
    argv = ["docker", "build", "--network", "host", "--build-arg", f"BASE_IMAGE={base}"]
    for name, value in (build_args or {}).items():
        argv += ["--build-arg", f"{name}={value}"]
    if target:  # a stage on its way to the image: no labels (they go on the image), no tags
        argv += ["--target", target]
    else:
        argv += ["--label", f"{labels.IMAGE_HASH}={full_hash}", "--label", f"{labels.IMAGE}={source.name}"]
    for tag in tags:
        argv += ["-t", tag]
    return [*argv, str(ctx)]


async def _docker_build(name: str, argv: list[str], log: Path) -> None:
    try:
        result = await run(argv, timeout=3600, env=BUILD_ENV)
    except CommandError as exc:
        _append(log, f"$ {' '.join(argv)}\n{exc.stderr}\n")
        raise BottleError(f"building the {name} image failed: {exc}; the full output is in {log}") from exc
    _append(log, f"$ {' '.join(argv)}\n{result.stdout}{result.stderr}\n")


async def build(
    source: ImageSource, progress: Progress, log: Path, *, force: bool = False, base_lock: asyncio.Lock | None = None
) -> str:
    """The image of ``source``, built unless an image of its current inputs exists (or ``force``).
    Builds that run side by side share ``base_lock``, so the base image is bootstrapped once."""
    ca = extra_ca_bytes()
    full = input_hash(source, ca)
    ref = _tag(source, full)
    if not force and await image_exists(ref):
        progress(f"{source.name} image: {ref} is up to date")
        return ref
    async with base_lock or contextlib.nullcontext():
        base = await ensure_base(progress, log)
    progress(f"{source.name} image: building {ref} (log: {log})")
    with build_context(source, ca) as ctx:
        build_args = {}
        pre = prebuilt(source)
        if pre is not None:
            # The prebuilt image and this Dockerfile's first stages side by side; the build below
            # finds those stages in the engine's layer cache.
            stages = build_argv(source, ctx, base, full, [], target=pre.alongside)
            results = await asyncio.gather(
                build(pre.source, progress, log, force=force, base_lock=base_lock),
                _docker_build(f"{source.name} ({pre.alongside} stage)", stages, log),
                return_exceptions=True,
            )
            for result in results:
                if isinstance(result, BaseException):
                    raise result
            build_args[pre.arg] = str(results[0])
        argv = build_argv(source, ctx, base, full, [ref, f"{source.repository}:latest"], build_args)
        await _docker_build(source.name, argv, log)
    await _drop_stale_tags(source, ref)
    return ref


async def _drop_stale_tags(source: ImageSource, keep: str) -> None:
    """Untag earlier builds (each some hundreds of megabytes); ones a running bottle still uses stay."""
    if os.environ.get(KEEP_OLD_IMAGES_ENV):
        return
    listing = await run(
        ["docker", "image", "ls", source.repository, "--format", "{{.Repository}}:{{.Tag}}"], check=False, timeout=30
    )
    stale = [ref for ref in listing.stdout.split() if ref not in (keep, f"{source.repository}:latest")]
    for ref in stale:
        await run(["docker", "image", "rm", ref], check=False, timeout=60)


async def ensure_images(progress: Progress, log: Path, *, force: bool = False) -> dict[str, str]:
    """The images of the current sources, built where missing. When all exist (the usual case on
    `start`), this is one `docker image inspect` call."""
    wanted = image_refs()
    if not force:
        found = await run(
            ["docker", "image", "inspect", "--format", "{{.Id}}", *wanted.values()], check=False, timeout=30
        )
        if found.returncode == 0:
            return wanted
        await engine.require_engine()  # a missing image, or no engine at all: say which first
    # The two builds run side by side: most of each is waiting on package downloads and on the
    # other build's compiler, so two at once take about as long as the longer one.
    lock = asyncio.Lock()
    wanted_sources = sources()
    results = await asyncio.gather(
        *(build(src, progress, log, force=force, base_lock=lock) for src in wanted_sources.values()),
        return_exceptions=True,
    )
    for result in results:  # both finished (no build is left running): report the first failure
        if isinstance(result, BaseException):
            raise result
    return {name: str(ref) for name, ref in zip(wanted_sources, results, strict=True)}


def registry_ref(registry: str, ref: str) -> str:
    """Where ``ref`` lives in an operator's registry (``images.registry`` in config.yaml)."""
    return f"{registry.rstrip('/')}/{ref}"


async def push(refs: dict[str, str], registry: str, progress: Progress) -> dict[str, str]:
    """Tag each image for ``registry`` and push it there; returns name -> the pushed reference."""
    pushed = {}
    for name, ref in refs.items():
        target = registry_ref(registry, ref)
        await run(["docker", "tag", ref, target], timeout=30)
        progress(f"pushing {target}")
        try:
            await run(["docker", "push", "--quiet", target], timeout=1800)
        except CommandError as exc:
            raise BottleError(
                f"pushing {target} failed: {exc}; is {registry} a registry this engine can reach?"
            ) from exc
        pushed[name] = target
    return pushed
