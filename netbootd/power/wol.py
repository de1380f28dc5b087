"""The Wake-on-LAN driver: a magic packet to a broadcast address, optionally out of one
interface. It can only power a machine on; off, cycle and status are refused, saying so.

The magic packet (AMD's "Magic Packet Technology" white paper, 1995): six 0xFF bytes, then
the target MAC sixteen times, here as a UDP datagram (port 9, "discard", by convention).
A NIC in standby matches it anywhere in a frame, so UDP to the segment's broadcast works.
"""

from __future__ import annotations

import socket
from dataclasses import dataclass

from netbootd.power.driver import PowerError, PowerUnsupported
from netbootd.power.spec import PowerSpec


def magic_packet(mac: str) -> bytes:
    raw = bytes.fromhex(mac.replace(":", "").replace("-", ""))
    if len(raw) != 6:
        raise ValueError(f"{mac!r} is not a MAC address")
    return b"\xff" * 6 + raw * 16


@dataclass(frozen=True, slots=True)
class WolDriver:
    spec: PowerSpec
    name: str = "wol"

    def run(self, action: str, secret: str | None) -> str:
        if action != "on":
            raise PowerUnsupported(
                f"Wake-on-LAN can only power a machine on; {action} needs a BMC (give the "
                "node power = { driver = \"ipmi\", ... }) or a hand at the machine")
        packet = magic_packet(self.spec.mac)
        try:
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
                s.setsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST, 1)
                if self.spec.interface:
                    s.setsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE,
                                 self.spec.interface.encode())
                s.sendto(packet, (self.spec.broadcast, self.spec.port))
        except OSError as e:
            where = f" on {self.spec.interface}" if self.spec.interface else ""
            raise PowerError(f"cannot send the Wake-on-LAN packet to {self.spec.broadcast}:"
                             f"{self.spec.port}{where}: {e.strerror or e}") from None
        return "unknown"  # a magic packet has no answer: the next boot event tells
