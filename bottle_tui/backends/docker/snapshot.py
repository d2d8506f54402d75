"""Snapshots of a docker bottle, and forks from them, on the engine.

A snapshot is taken with the agent container paused, so its two halves are one moment: the
container's own filesystem (its changes over the agent image) committed to a local image
``bottle-tui/snapshot:<name>``, and the work volume (the checkout and ~/.claude) as a tar in
``snapshots/<name>/home.tar``, read by a throwaway container with the volume mounted read-only
and no network. The policy in force and the bottle's metadata are copied beside it by the host.

The image is labelled as a snapshot and with the home that took it (cleanup removes the images of
test homes, and ones whose folder is gone); the labels the agent container carried (compose's,
bottle-tui's) are blanked, so a container of this image is never taken for a bottle. A fork's work
volume is filled from the tar by a throwaway container of the snapshot image, as the agent, with
no network and no capabilities: the archive, which holds the agent's files, is never unpacked on
the host.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path

from bottle_contract.clock import now_iso

from ...errors import BottleError
from ...plan import AGENT_HOME
from ...runner import CommandError, run
from ...snapshots import Snapshot, image_ref, record
from ...state import SnapshotDir, StateDir, project_name, snapshot_dir
from . import engine, labels, workspace

# Reading or writing a large home takes a while (see `make bench`); this only bounds a hang.
HOME_TIMEOUT = 1800.0
COMMIT_TIMEOUT = 1800.0


def _blanked(container_labels: dict[str, str]) -> list[str]:
    """``--change`` arguments that blank every label the container carried and set ours."""
    return [f"LABEL {json.dumps(key)}={json.dumps('')}" for key in sorted(container_labels)]


async def _container_labels(container: str) -> dict[str, str]:
    out = await run(["docker", "inspect", "--format", "{{json .Config.Labels}}", container], timeout=30)
    found = json.loads(out.stdout or "null")
    return found if isinstance(found, dict) else {}


async def image_exists(ref: str) -> bool:
    found = await run(["docker", "image", "inspect", "--format", "{{.Id}}", ref], check=False, timeout=30)
    return found.returncode == 0


def tar_home_argv(volume: str, image: str) -> list[str]:
    """A throwaway container that writes the volume (mounted read-only at the agent's home) as a tar
    on stdout: root with only the capability to read every file, no network."""
    return [
        "docker", "run", "--rm", "--network", "none", "--cap-drop", "ALL", "--cap-add", "DAC_READ_SEARCH",
        "--security-opt", "no-new-privileges:true", "--user", "0:0",
        "--mount", f"type=volume,source={volume},target={AGENT_HOME},readonly",
        "--entrypoint", "tar", image, "--numeric-owner", "-C", AGENT_HOME, "-cf", "-", ".",
    ]  # fmt: skip


def untar_home_argv(volume: str, image: str) -> list[str]:
    """A throwaway container that unpacks a tar from stdin into the volume, as the agent: no
    network, no capabilities (a file of the archive lands only where the agent could write it)."""
    return [
        "docker", "run", "--rm", "-i", "--network", "none", "--cap-drop", "ALL",
        "--security-opt", "no-new-privileges:true", "--user", workspace.AGENT_UID,
        "--mount", f"type=volume,source={volume},target={AGENT_HOME}",
        "--entrypoint", "tar", image, "--no-same-owner", "-C", AGENT_HOME, "-xf", "-",
    ]  # fmt: skip


async def take(home: Path, state: StateDir, slug: str, folder: SnapshotDir, agent: str, bottle: str) -> Snapshot:
    """Snapshot the running docker bottle ``slug`` (its state in ``state``) into ``folder`` (of
    ``home``), which must not exist yet. A one-line BottleError when it cannot; nothing is left
    behind then (neither the image nor a partial folder)."""
    project_agent = engine.container_name(project_name(slug), "agent")
    if not await engine.container_running(project_agent):
        raise BottleError(f"bottle {slug}'s agent container is not running: a snapshot needs a running bottle")
    ref = image_ref(folder.name)
    if await image_exists(ref):
        raise BottleError(
            f"image {ref} exists already, without its snapshot folder: pick another --name "
            "(`bottle-tui cleanup` removes such leftovers)"
        )
    partial = folder.partial()
    shutil.rmtree(partial, ignore_errors=True)
    volume = workspace.volume_of(state)
    image_made = False
    try:
        partial.mkdir(parents=True, mode=0o700)
        for src, dest in ((state.routes, folder.routes.name), (state.metadata, folder.metadata.name)):
            if src.is_file():
                shutil.copy2(src, partial / dest)
        tar_image = await workspace.helper_image(volume)
        changes = _blanked(await _container_labels(project_agent)) + [
            f"LABEL {labels.SNAPSHOT}={json.dumps(folder.name)} {labels.SNAPSHOT_OF}={json.dumps(slug)} "
            f"{labels.HOME}={json.dumps(str(home))}"
        ]
        await run(["docker", "pause", project_agent], timeout=60)
        paused = time.monotonic()
        try:
            committed = await run(
                [
                    "docker",
                    "commit",
                    "--pause=false",
                    *(a for c in changes for a in ("--change", c)),
                    project_agent,
                    ref,
                ],
                timeout=COMMIT_TIMEOUT,
            )
            image_made = True
            tarred = await run(
                tar_home_argv(volume, tar_image), stdout_path=partial / folder.home_tar.name, timeout=HOME_TIMEOUT,
                check=False,
            )  # fmt: skip
        finally:
            await run(["docker", "unpause", project_agent], check=False, timeout=60)
            paused = time.monotonic() - paused
        if tarred.returncode not in (0, 1):  # 1: a file changed while read (it cannot: the agent is paused)
            raise CommandError(tarred.argv, tarred.returncode, tarred.stderr)
        snap = Snapshot(
            name=folder.name,
            of=slug,
            agent=agent,
            bottle=bottle,
            backend="docker",
            created_at=now_iso(),
            image=ref,
            image_id=committed.stdout.strip(),
            home_bytes=(partial / folder.home_tar.name).stat().st_size,
            path=folder.path,
            paused_seconds=round(paused, 2),
        )
        folder.write_record(record(snap), partial)
        os.replace(partial, folder.path)
    except (CommandError, OSError) as exc:
        shutil.rmtree(partial, ignore_errors=True)
        if image_made:
            await run(["docker", "image", "rm", ref], check=False, timeout=120)
        why = exc.strerror if isinstance(exc, OSError) and not isinstance(exc, CommandError) else exc
        raise BottleError(f"snapshot of {slug} failed: {why}") from exc
    return snap


async def restore_home(slug: str, snap: Snapshot) -> None:
    """Fill the (new, empty) work volume of bottle ``slug`` from the snapshot's home tar."""
    try:
        await run(
            untar_home_argv(workspace.volume_name(slug), snap.image), stdin_path=snap.dir.home_tar, timeout=HOME_TIMEOUT
        )
    except (CommandError, OSError) as exc:
        raise BottleError(f"filling the work volume of {slug} from snapshot {snap.name} failed: {exc}") from exc


async def users(ref: str) -> list[str]:
    """What runs on the image ``ref``: the slug of each bottle, else the container's name."""
    fmt = '{{.Label "%s"}}\t{{.Names}}' % labels.SLUG
    listing = await run(
        ["docker", "ps", "--all", "--filter", f"ancestor={ref}", "--format", fmt], check=False, timeout=30
    )
    if listing.returncode != 0:
        return []
    return sorted({(slug or name) for slug, _, name in (line.partition("\t") for line in listing.stdout.splitlines())})


async def remove_image(ref: str) -> str | None:
    """Remove the snapshot image ``ref``; one line when that failed (None when it is gone)."""
    result = await run(["docker", "image", "rm", ref], check=False, timeout=120)
    if result.returncode != 0 and "no such image" not in result.stderr.lower():
        return f"cannot remove image {ref}: {(result.stderr.strip().splitlines() or ['no answer'])[-1][:200]}"
    return None


async def engine_images() -> list[tuple[str, str, str]]:
    """Every snapshot image on the engine: (its tag, the snapshot name, the home that took it)."""
    listing = await run(
        ["docker", "image", "ls", "--filter", f"label={labels.SNAPSHOT}", "--format", "{{.Repository}}:{{.Tag}}"],
        timeout=30,
    )
    refs = [r for r in listing.stdout.split() if not r.endswith(":<none>")]
    if not refs:
        return []
    fmt = '{{index .Config.Labels "%s"}}\t{{index .Config.Labels "%s"}}' % (labels.SNAPSHOT, labels.HOME)
    found = []
    for ref in refs:
        inspected = await run(["docker", "image", "inspect", "--format", fmt, ref], check=False, timeout=30)
        name, _, home = inspected.stdout.strip().partition("\t")
        if inspected.returncode == 0 and name:
            found.append((ref, name, home))
    return found


def folder_holds(home: str, name: str, ref: str) -> bool:
    """Whether the snapshot folder of ``name`` in ``home`` is there and names ``ref`` as its image."""
    if not home:
        return False
    try:
        data = snapshot_dir(Path(home), name).read_record()
    except BottleError:
        return False
    return bool(data and data.get("image") == ref)
