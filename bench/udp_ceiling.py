"""The rough ceiling of a Python DNS server here: uvloop, one precomputed answer.

Every query gets ``go.example.com A 192.0.2.3`` (TTL 60): only the ID, the RD bit and
the question are taken from the query. No parsing past the question, no EDNS, no
GeoIP. ``bench/dns`` runs it beside mirror-router as a yardstick for the machine.

    python bench/udp_ceiling.py --port 5399 [--rcvbuf BYTES]
"""

from __future__ import annotations

import argparse
import asyncio
import socket
import struct
from typing import cast

import uvloop

FLAGS = 0x8400  # QR, AA (RD is copied per query)
COUNTS = struct.pack("!HHHH", 1, 1, 0, 0)
ANSWER = b"\xc0\x0c" + struct.pack("!HHIH", 1, 1, 60, 4) + socket.inet_aton("192.0.2.3")


class Ceiling(asyncio.DatagramProtocol):
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        i = 12
        while i < len(data) and data[i]:
            i += data[i] + 1
        end = i + 5
        if end > len(data):
            return
        flags = FLAGS | (data[2] & 0x01) << 8
        self.transport.sendto(data[:2] + flags.to_bytes(2, "big") + COUNTS + data[12:end]
                              + ANSWER, addr)


async def serve(port: int, rcvbuf: int) -> None:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    sock.bind(("127.0.0.1", port))
    await asyncio.get_running_loop().create_datagram_endpoint(Ceiling, sock=sock)
    await asyncio.Event().wait()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--rcvbuf", type=int, default=4 << 20)
    args = p.parse_args()
    uvloop.run(serve(args.port, args.rcvbuf))


if __name__ == "__main__":
    main()
