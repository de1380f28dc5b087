"""Which MAC stands behind a client IP address right now: learnt pairs that expire like leases.

The proxy never assigns addresses, but it learns them: a PXE client's DHCPREQUEST carries
option 50 (RFC 2131 section 4.3.2) and later TFTP/HTTP requests name the MAC in their path.
Requests that name no MAC (``pxelinux.cfg/default``, a loader download, a kernel fetched over
HTTP) are tied to a node only through this map, so a wrong pair hands one machine another's
config and files its downloads in the other's timeline. Two rules keep the pairs honest:

- a pair is replaced when another MAC shows up with that address (the newest sighting wins);
- a pair expires ``ttl`` seconds after it was last learnt, like a DHCP lease: an address that
  moves to another machine (a new lease, a re-cabled port) is not tied to the old one forever.
  Only learning renews a pair; a request that merely uses the address does not, or an address
  in steady use by a new machine would keep the old MAC alive.

Pure: the caller passes ``now``; no clock is read here. Bounded: at most ``capacity`` pairs,
the least recently learnt forgotten first.
"""

from __future__ import annotations

from collections import OrderedDict

UNKNOWN_ADDRESSES = frozenset({"", "0.0.0.0"})


class IpMacs:
    """IP address -> (MAC, when learnt), least recently learnt first."""

    def __init__(self, ttl: float, capacity: int) -> None:
        self.ttl = ttl
        self.capacity = capacity
        self._pairs: OrderedDict[str, tuple[str, float]] = OrderedDict()

    def learn(self, ip: str | None, mac: str | None, now: float) -> None:
        if not ip or ip in UNKNOWN_ADDRESSES or not mac:
            return
        self._pairs.pop(ip, None)
        self._pairs[ip] = (mac, now)
        while len(self._pairs) > self.capacity:
            self._pairs.popitem(last=False)

    def mac_for(self, ip: str | None, now: float) -> str | None:
        """The MAC learnt for ``ip`` less than ``ttl`` seconds ago, else None (forgotten)."""
        if not ip:
            return None
        pair = self._pairs.get(ip)
        if pair is None:
            return None
        mac, learnt = pair
        if now - learnt >= self.ttl or now < learnt - self.ttl:
            # Expired (or the clock stepped far back: the pair's age is unknown).
            del self._pairs[ip]
            return None
        return mac

    def __len__(self) -> int:
        return len(self._pairs)
