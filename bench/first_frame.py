"""The console as `bottle-tui ... console` runs it, noting the moment its first frame is written
(bench_console.py's launches; no product code is changed for it).

Usage: python bench/first_frame.py OUT -- ARGS...; OUT gets one line: the CLOCK_MONOTONIC time
when the driver was handed the first frame (the one that draws the proposals pane), the process's
CPU seconds then, and the number of modules imported by then.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

OUT = Path(sys.argv[1])
ARGS = sys.argv[sys.argv.index("--") + 1 :]

import textual.drivers.linux_driver as linux_driver  # noqa: E402  (the console imports it anyway)

write = linux_driver.LinuxDriver.write


noted: list[bool] = []


def noting(self: linux_driver.LinuxDriver, data: str) -> None:
    if "Proposals" in data and not noted:
        noted.append(True)
        OUT.write_text(f"{time.monotonic()} {time.process_time()} {len(sys.modules)}\n")
    write(self, data)


linux_driver.LinuxDriver.write = noting  # type: ignore[method-assign]

from bottle_tui.cli import main  # noqa: E402

sys.exit(main(ARGS))
