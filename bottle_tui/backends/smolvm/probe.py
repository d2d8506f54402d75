"""Whether microVMs boot on this host: a tiny probe VM is booted once per host and the answer cached.

Some hosts have /dev/kvm and still cannot boot a guest (nested KVM where the guest dies with
KVM_EXIT_INTERNAL_ERROR), so only a real boot tells. The cache is keyed by host name, kernel and
smolvm version; ``cached_probe`` reads it without running anything (for `ls` and the console).
"""

from __future__ import annotations

import json
import os
import platform
import re
import secrets
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path

from bottle_contract.files import atomic_write

from ...errors import BottleError
from ...state import PROJECT_PREFIX
from .engine import Smolvm, SmolvmError

CACHE_ENV = "CLAUDE_BOTTLE_SMOLVM_PROBE_CACHE"
REPROBE_ENV = "CLAUDE_BOTTLE_SMOLVM_REPROBE"
BOOT_TIMEOUT = 120.0
# Named with the bottles' prefix but without their labels: discovery ignores it, cleanup removes a leftover.
PROBE_NAME_PREFIX = f"{PROJECT_PREFIX}probe-"


@dataclass(frozen=True)
class ProbeResult:
    ok: bool
    reason: str  # why not, in one line ("" when ok)
    host: str
    smolvm: str
    checked_at: str

    @property
    def summary(self) -> str:
        return "microVMs boot here" if self.ok else f"microVMs cannot boot on this host: {self.reason}"


def cache_path() -> Path:
    explicit = os.environ.get(CACHE_ENV)
    if explicit:
        return Path(explicit)
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "bottle-tui" / "smolvm-probe.json"


def host_key() -> str:
    return f"{platform.node()} {platform.system()} {platform.release()}"


def cached_probe(smolvm_version: str | None = None) -> ProbeResult | None:
    """The cached answer for this host (and this smolvm version, when given); runs nothing."""
    try:
        doc = json.loads(cache_path().read_text())
        result = ProbeResult(**doc)
    except (OSError, ValueError, TypeError):
        return None
    if result.host != host_key() or (smolvm_version is not None and result.smolvm != smolvm_version):
        return None
    return result


def one_line(message: str) -> str:
    """smolvm's error message without its log prefixes, on one line, not too long."""
    text = re.sub(r"\[\d{4}-\d\d-\d\dT[^\]]*\]\s*", "", message)
    # smolvm nests its context ("agent operation failed: start machine: …"); the cause is at the end.
    text = re.sub(r"(?:agent operation failed|start machine|monitor agent): ", "", text)
    text = " ".join(text.split())
    return text if len(text) <= 240 else text[:237] + "…"


async def _boot_once(smol: Smolvm) -> str:
    """Boot a tiny VM and run `true` in it; "" when that worked, else why not."""
    if not Path("/dev/kvm").exists() and platform.system() == "Linux":
        return "no /dev/kvm (KVM is missing or not exposed to this machine)"
    name = PROBE_NAME_PREFIX + secrets.token_hex(3)
    try:
        await smol.machine_create(name=name, flags=["--cpus", "1", "--mem", "256"])
        await smol.machine_start(name=name, timeout=BOOT_TIMEOUT)
        result = await smol.machine_exec(name=name, argv=["true"], timeout=30)
        return "" if result.status == 0 else f"the probe VM booted but `true` exited {result.status} in it"
    except SmolvmError as exc:
        return one_line(exc.detail)
    except BottleError as exc:
        return one_line(str(exc))
    finally:
        for step in (smol.machine_stop, smol.machine_delete):
            try:
                await step(name=name)
            except BottleError:
                pass


async def probe(smol: Smolvm, version: str, *, progress: Callable[[str], None] | None = None) -> ProbeResult:
    """The cached answer, or boot the probe VM now (tens of seconds) and cache what it shows."""
    if not os.environ.get(REPROBE_ENV):
        cached = cached_probe(version)
        if cached is not None:
            return cached
    if progress is not None:
        progress("smolvm: booting a probe VM once on this host to see whether microVMs work here (up to a minute)")
    reason = await _boot_once(smol)
    result = ProbeResult(
        ok=not reason,
        reason=reason,
        host=host_key(),
        smolvm=version,
        checked_at=datetime.now(UTC).isoformat(timespec="seconds"),
    )
    path = cache_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, json.dumps(asdict(result), indent=2) + "\n", mode=0o644)
    return result
