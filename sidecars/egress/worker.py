"""One egress worker: ``mitmdump`` whose proxy port is bound with ``SO_REUSEPORT``, so that the
bundle's workers (bottle_contract.workers; init starts one per CPU) all listen on the one proxy
port and the kernel spreads the agent's connections over them. Arguments are mitmdump's.

mitmproxy binds its listening sockets itself and has no option for SO_REUSEPORT: the one method
that opens a TCP listener (mitmproxy 11, pinned in the image) is replaced by one that passes
``reuse_port``; every other mode keeps mitmproxy's own. A worker that exits closes only its own
socket: the kernel hands new connections to the others until init has it back.
"""

from __future__ import annotations

import asyncio
import os
import sys
from typing import Any

from mitmproxy.certs import DEFAULT_DHPARAM
from mitmproxy.proxy import mode_servers
from mitmproxy.tools.main import mitmdump

from bottle_contract.files import atomic_write

_listen = mode_servers.AsyncioServerInstance.listen


async def _listen_reuse_port(self: Any, host: str, port: int) -> list[Any]:
    if self.mode.transport_protocol != "tcp" or port == 0:
        return await _listen(self, host, port)
    return [await asyncio.start_server(self.handle_stream, host, port, reuse_port=True)]


def _dhparam(argv: list[str]) -> None:
    """mitmproxy writes its DH parameters into confdir when they are missing, in place: a worker
    starting beside another could read them half written. Written here whole, before it looks."""
    confdirs = [a.split("=", 1)[1] for a in argv if a.startswith("confdir=")]
    path = os.path.join(os.path.expanduser(confdirs[-1] if confdirs else "~/.mitmproxy"), "mitmproxy-dhparam.pem")
    if not os.path.exists(path):
        os.makedirs(os.path.dirname(path), exist_ok=True)
        atomic_write(path, DEFAULT_DHPARAM, mode=0o644)


def main(argv: list[str]) -> int:
    _dhparam(argv)
    mode_servers.AsyncioServerInstance.listen = _listen_reuse_port  # type: ignore[method-assign]
    return mitmdump(argv) or 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
