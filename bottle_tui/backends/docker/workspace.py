"""The agent's work volume: its home (the checkout at /home/agent/work and claude's ~/.claude), on
a named volume of its own, so that nothing is lost at stop.

At stop the checkout is looked at before anything goes: uncommitted or untracked changes, stashes,
and commits that no ref in the gate's mirror holds. What it finds is saved in
``archive/<slug>/work/``: ``uncommitted.patch`` (``git diff --binary`` of tracked and untracked
files against HEAD) and ``refs.bundle`` (every local ref, HEAD and every stash entry); a checkout
that is a plain folder (a bottle without git) as ``work.tar.gz``. The scripts run as the agent,
either in the running agent container or, when it is gone, in a throwaway container of the agent
image with the volume mounted read-only and no network. The agent's repository is never written:
the patch is made with an index and an object store of its own in /tmp.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from ...errors import BottleError
from ...plan import AGENT_HOME, WORKDIR
from ...runner import CommandError, CommandNotFound, run
from ...state import REFS_BUNDLE, UNCOMMITTED_PATCH, WORK_TARBALL, StateDir
from . import labels

VOLUME_PREFIX = "bottle-tui-work-"
AGENT_IMAGE_LABEL = "dev.bottle-tui.agent-image"
FALLBACK_AGENT_IMAGE = "bottle-tui/agent:latest"
AGENT_UID = "1000:1000"
# Archiving a large checkout takes a while (a 200 MB one: see `make bench`); this only bounds a hang.
ARCHIVE_TIMEOUT = 1800.0

# The git calls below never run the agent's own helpers (fsmonitor, external diff, textconv):
# the patch must be what `git apply` takes back, whatever the agent configured.
_GIT = "git -c core.fsmonitor=false -c core.untrackedCache=false -c core.quotepath=false"

# $1 the checkout; stdin: object ids the gate's mirror holds at its ref tips. Prints one of
# `missing`, `empty`, `plain`, or `git CHANGES STASHES COMMITS`.
PROBE_SCRIPT = f"""
cd "$1" 2>/dev/null || {{ echo missing; exit 0; }}
[ -n "$(ls -A . 2>/dev/null)" ] || {{ echo empty; exit 0; }}
[ "$(git rev-parse --show-toplevel 2>/dev/null)" = "$(pwd -P)" ] || {{ echo plain; exit 0; }}
changes=$({_GIT} status --porcelain --untracked-files=all 2>/dev/null | wc -l)
stashes=$(git rev-list --walk-reflogs refs/stash 2>/dev/null | wc -l)
held=$(git cat-file --batch-check='%(objectname) %(objecttype)' | awk '$2 != "missing" {{print "^" $1}}')
# Stash commits are counted as stashes, not here.
commits=$({{ printf '%s\\n' "$held"; git rev-parse -q --verify HEAD; }} \\
  | grep . | git rev-list --count --exclude=refs/stash --all --stdin 2>/dev/null || echo unknown)
echo "git $changes $stashes $commits"
"""

# $1 the checkout. stdout: every change against HEAD (or the empty tree), untracked files
# included, as a binary patch. The agent's index and object store are left as they are.
PATCH_SCRIPT = f"""
set -e
cd "$1"
index=$(git rev-parse --git-path index)
objects=$(cd "$(git rev-parse --git-path objects)" && pwd -P)
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
mkdir "$tmp/objects"
[ -f "$index" ] && cp "$index" "$tmp/index"
base=$(git rev-parse -q --verify 'HEAD^{{tree}}' || git hash-object -t tree /dev/null)
export GIT_INDEX_FILE="$tmp/index" GIT_OBJECT_DIRECTORY="$tmp/objects" GIT_ALTERNATE_OBJECT_DIRECTORIES="$objects"
{_GIT} -c core.looseCompression=0 add -A
{_GIT} diff --cached --binary --no-ext-diff --no-textconv --no-color "$base"
"""

# $1 the checkout. stdout: a bundle of every ref, HEAD, and each stash entry as refs/stashes/N,
# made from a scratch repository that borrows the checkout's objects; exit 3 when there is no ref.
# No new delta search (pack.window=0): deltas already packed are reused, and the loose objects of
# local commits go as they are (with it, a 200 MB commit took 2 minutes of a stop instead of seconds).
BUNDLE_SCRIPT = """
set -e
cd "$1"
objects=$(cd "$(git rev-parse --git-path objects)" && pwd -P)
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
git init -q --bare "$tmp/b.git"
echo "$objects" > "$tmp/b.git/objects/info/alternates"
{ git for-each-ref --format='create %(refname) %(objectname)'
  git rev-list --walk-reflogs refs/stash 2>/dev/null | awk '{print "create refs/stashes/" NR-1 " " $1}'; } \\
  | git --git-dir="$tmp/b.git" update-ref --stdin
[ -n "$(git --git-dir="$tmp/b.git" for-each-ref --count=1)" ] || exit 3
if branch=$(git symbolic-ref -q HEAD) && git rev-parse -q --verify "$branch" >/dev/null; then
  git --git-dir="$tmp/b.git" symbolic-ref HEAD "$branch"
elif head=$(git rev-parse -q --verify HEAD); then
  git --git-dir="$tmp/b.git" update-ref --no-deref HEAD "$head"
fi
if git --git-dir="$tmp/b.git" rev-parse -q --verify HEAD >/dev/null; then
  git --git-dir="$tmp/b.git" -c pack.window=0 bundle create - HEAD --all
else
  git --git-dir="$tmp/b.git" -c pack.window=0 bundle create - --all
fi
"""

# $1 the agent's home, $2 the checkout's folder name: the folder as a gzip'd tarball on stdout.
TAR_SCRIPT = """exec tar --use-compress-program='gzip -1' -C "$1" -cf - "$2" """


def volume_name(slug: str) -> str:
    return VOLUME_PREFIX + slug


def volume_of(state: StateDir) -> str:
    """The work volume of bottle ``state.slug``: a claimed pool member's is the one its member was
    made with (a volume cannot be renamed), as its metadata.json says."""
    meta = (state.read_metadata() if state.path.is_dir() else None) or {}
    volume = meta.get("volume")
    return volume if isinstance(volume, str) and slug_of_volume(volume) else volume_name(state.slug)


def slug_of_volume(name: str) -> str | None:
    return name[len(VOLUME_PREFIX) :] if name.startswith(VOLUME_PREFIX) else None


@dataclass(frozen=True)
class Probe:
    """What the checkout holds that nothing else does."""

    kind: str  # "git", "plain", "empty" or "missing"
    changes: int = 0  # changed or untracked files (ignored ones not counted)
    stashes: int = 0
    commits: int | None = 0  # commits no ref of the gate's mirror reaches (None: unknown)

    @property
    def unsaved(self) -> bool:
        if self.kind == "git":
            return bool(self.changes or self.stashes or self.commits is None or self.commits)
        return self.kind == "plain"


def parse_probe(text: str) -> Probe:
    words = text.split()
    if not words or words[0] not in ("git", "plain", "empty", "missing"):
        raise BottleError(f"looking at {WORKDIR} gave an answer bottle-tui does not know: {text.strip()[:200]!r}")
    if words[0] != "git":
        return Probe(words[0])
    if len(words) != 4 or not words[1].isdigit() or not words[2].isdigit():
        raise BottleError(f"looking at the git checkout in {WORKDIR} failed: {text.strip()[:200]!r}")
    return Probe("git", int(words[1]), int(words[2]), int(words[3]) if words[3].isdigit() else None)


def _count(n: int, one: str, many: str) -> str:
    return f"{n} {one if n == 1 else many}"


def describe(probe: Probe, dest: Path, *, mirror_read: bool = True, files: Sequence[str] = ()) -> str:
    """What stop found and saved, in one line."""
    if probe.kind in ("empty", "missing"):
        return f"checkout: {WORKDIR} is empty, nothing to save"
    if probe.kind == "plain":
        return f"checkout: saved {WORKDIR} (a plain folder) as {dest / WORK_TARBALL}"
    if not probe.unsaved:
        return "checkout: nothing unsaved (no changes, no stashes, every commit is in the gate's mirror)"
    found = []
    if probe.changes:
        found.append(_count(probe.changes, "changed or untracked file", "changed or untracked files"))
    if probe.stashes:
        found.append(_count(probe.stashes, "stash", "stashes"))
    if probe.commits is None or not mirror_read:
        found.append("commits (the gate's mirror could not be read, so all of them)")
    elif probe.commits:
        found.append(_count(probe.commits, "commit the gate does not hold", "commits the gate does not hold"))
    what = ", ".join(found[:-1]) + (" and " if len(found) > 1 else "") + found[-1]
    return f"checkout: saved {what} in {dest}/ ({', '.join(files or (UNCOMMITTED_PATCH, REFS_BUNDLE))})"


@dataclass(frozen=True)
class Saved:
    """The outcome of archiving a checkout: one line for the operator, and whether the volume may
    go (nothing unsaved, or it is all in the archive now)."""

    line: str
    safe_to_remove: bool


async def mirror_tips(mirror: Path | None) -> list[str] | None:
    """The object ids at the ref tips of the gate's mirror(s); [] when there is no mirror yet,
    None when one could not be read (every commit then counts as unsaved)."""
    if mirror is None or not mirror.is_dir():
        return []
    tips: list[str] = []
    for repo in sorted(mirror.glob("*.git")):
        try:
            listing = await run(["git", "--git-dir", str(repo), "for-each-ref", "--format=%(objectname)"], timeout=60)
        except (CommandError, OSError):
            return None
        tips += listing.stdout.split()
    return tips


def exec_place(container: str) -> list[str]:
    """Run the scripts in the running agent container, as the agent."""
    return ["docker", "exec", "-i", "--user", AGENT_UID, container, "sh"]


def helper_place(volume: str, image: str) -> list[str]:
    """Run the scripts in a throwaway container of the agent image: the volume read-only, no
    network, no capabilities."""
    return [
        "docker",
        "run",
        "--rm",
        "-i",
        "--network",
        "none",
        "--cap-drop",
        "ALL",
        "--security-opt",
        "no-new-privileges:true",
        "--user",
        AGENT_UID,
        "--mount",
        f"type=volume,source={volume},target={AGENT_HOME},readonly",
        "--entrypoint",
        "sh",
        image,
    ]


def _script(place: Sequence[str], script: str, *args: str) -> list[str]:
    """``place`` ends in a shell (``sh``) where the checkout is."""
    return [*place, "-c", script, "bottle-work", *args]


async def archive(place: Sequence[str], dest: Path, *, mirror: Path | None, git: bool, workdir: str = WORKDIR) -> Saved:
    """Look at the checkout (through ``place``) and save what nothing else holds into ``dest``
    (archive/<slug>/work/, replaced whole). A bottle without git has its checkout saved as a
    tarball whenever it is not empty. Raises a one-line BottleError when it cannot look or save."""
    tips = await mirror_tips(mirror) if git else []
    stdin = "".join(f"{t}\n" for t in tips or ())
    try:
        probed = await run(_script(place, PROBE_SCRIPT, workdir), input=stdin.encode(), timeout=300)
    except CommandError as exc:
        raise BottleError(f"cannot look at the checkout {WORKDIR}: {exc}") from exc
    probe = parse_probe(probed.stdout)
    if probe.kind == "git" and not git:
        probe = Probe("plain")  # a bottle without git: the agent's own repository goes whole
    if not probe.unsaved:
        return Saved(describe(probe, dest), True)
    partial = dest.with_name(f".{dest.name}.partial")
    shutil.rmtree(partial, ignore_errors=True)
    try:
        partial.mkdir(parents=True, mode=0o700)
        if probe.kind == "plain":
            home, folder = os.path.split(workdir)
            await run(
                _script(place, TAR_SCRIPT, home, folder), stdout_path=partial / WORK_TARBALL, timeout=ARCHIVE_TIMEOUT
            )
        else:
            await run(
                _script(place, PATCH_SCRIPT, workdir), stdout_path=partial / UNCOMMITTED_PATCH, timeout=ARCHIVE_TIMEOUT
            )
            bundled = await run(
                _script(place, BUNDLE_SCRIPT, workdir),
                stdout_path=partial / REFS_BUNDLE,
                timeout=ARCHIVE_TIMEOUT,
                check=False,
            )
            if bundled.returncode == 3:  # no commit at all: the patch holds everything
                (partial / REFS_BUNDLE).unlink()
            elif bundled.returncode != 0:
                raise CommandError(bundled.argv, bundled.returncode, bundled.stderr)
            if (partial / UNCOMMITTED_PATCH).stat().st_size == 0:  # only commits or stashes to save
                (partial / UNCOMMITTED_PATCH).unlink()
        files = [name for name in (UNCOMMITTED_PATCH, REFS_BUNDLE) if (partial / name).exists()]
        shutil.rmtree(dest, ignore_errors=True)
        os.replace(partial, dest)
    except (CommandError, OSError) as exc:
        shutil.rmtree(partial, ignore_errors=True)
        why = exc.strerror if isinstance(exc, OSError) and not isinstance(exc, CommandError) else exc
        raise BottleError(f"cannot save the checkout's unsaved work in {dest}: {why}") from exc
    return Saved(describe(probe, dest, mirror_read=tips is not None, files=files), True)


# -- the volume itself -------------------------------------------------------------------------------


async def create(slug: str, home: Path, agent: str, image: str, *, fresh: bool = False) -> str:
    """The bottle's work volume, created when missing (a resumed bottle has it already).
    ``fresh``: a new slug's, which cannot exist yet (one engine call less)."""
    name = volume_name(slug)
    if not fresh and await exists(name):
        return name
    await run(
        [
            "docker",
            "volume",
            "create",
            "--label",
            f"{labels.MANAGED}=true",
            "--label",
            f"{labels.SLUG}={slug}",
            "--label",
            f"{labels.HOME}={home}",
            "--label",
            f"{labels.AGENT}={agent}",
            "--label",
            f"{AGENT_IMAGE_LABEL}={image}",
            name,
        ],
        timeout=60,
    )
    return name


async def exists(name: str) -> bool:
    try:
        result = await run(["docker", "volume", "inspect", "--format", "{{.Name}}", name], check=False, timeout=30)
    except CommandNotFound:
        return False
    return result.returncode == 0


@dataclass(frozen=True)
class Volume:
    name: str
    slug: str
    home: str
    image: str


async def listing() -> list[Volume]:
    """Every work volume carrying our labels whose name matches its slug label."""
    fmt = '{{.Name}}\t{{.Label "%s"}}\t{{.Label "%s"}}\t{{.Label "%s"}}' % (labels.SLUG, labels.HOME, AGENT_IMAGE_LABEL)
    out = await run(["docker", "volume", "ls", "--filter", f"label={labels.MANAGED}=true", "--format", fmt], timeout=30)
    found = []
    for line in out.stdout.splitlines():
        name, slug, home, image = (line.split("\t") + ["", "", ""])[:4]
        if slug and slug_of_volume(name) == slug:
            found.append(Volume(name, slug, home, image))
    return sorted(found, key=lambda v: v.name)


async def helper_image(volume: str) -> str:
    """The agent image to look at a volume with: the one it was made for, else the current one."""
    label = await run(
        ["docker", "volume", "inspect", "--format", '{{index .Labels "%s"}}' % AGENT_IMAGE_LABEL, volume],
        check=False,
        timeout=30,
    )
    image = label.stdout.strip()
    if image and image != "<no value>":
        found = await run(["docker", "image", "inspect", "--format", "{{.Id}}", image], check=False, timeout=30)
        if found.returncode == 0:
            return image
    return FALLBACK_AGENT_IMAGE


async def remove(name: str) -> str | None:
    """Remove the volume; one line when that failed (None when it is gone)."""
    result = await run(["docker", "volume", "rm", name], check=False, timeout=60)
    if result.returncode != 0 and "no such volume" not in result.stderr.lower():
        return f"cannot remove volume {name}: {(result.stderr.strip().splitlines() or ['no answer'])[-1][:200]}"
    return None
