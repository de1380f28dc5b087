"""Recently seen client identities, so a TFTP or HTTP request is decided like its DHCP packet.

A pxelinux request for ``pxelinux.cfg/01-<mac>`` carries only the MAC; the DHCP packet that
preceded it carried the GUID, arch and vendor class. Merging them keeps group selectors on
arch or vendor class consistent across the whole boot. Bounded (LRU) so a flood of spoofed
MACs cannot grow memory without limit.
"""

from __future__ import annotations

from collections import OrderedDict

from netbootd.core.identity import ClientIdentity


class Sightings:
    def __init__(self, capacity: int = 100_000) -> None:
        self.capacity = capacity
        self._by_mac: OrderedDict[str, ClientIdentity] = OrderedDict()
        self._mac_by_guid: dict[str, str] = {}

    def __len__(self) -> int:
        return len(self._by_mac)

    def saw(self, ident: ClientIdentity) -> None:
        if ident.mac is None:
            return
        old = self._by_mac.pop(ident.mac, None)
        merged = ident.merged_with(old) if old is not None else ident
        if old is not None and old.guid and old.guid != merged.guid and \
                self._mac_by_guid.get(old.guid) == ident.mac:
            # The MAC now shows another GUID: forget the old pairing, or a client cycling
            # through GUIDs would grow this map without bound.
            del self._mac_by_guid[old.guid]
        self._by_mac[ident.mac] = merged
        if merged.guid:
            self._mac_by_guid[merged.guid] = ident.mac
        while len(self._by_mac) > self.capacity:
            _, dropped = self._by_mac.popitem(last=False)
            if dropped.guid and self._mac_by_guid.get(dropped.guid) == dropped.mac:
                del self._mac_by_guid[dropped.guid]

    def by_mac(self, mac: str) -> ClientIdentity | None:
        return self._by_mac.get(mac)

    def by_guid(self, guid: str) -> ClientIdentity | None:
        mac = self._mac_by_guid.get(guid)
        return self._by_mac.get(mac) if mac else None

    def enrich(self, ident: ClientIdentity) -> ClientIdentity:
        """``ident`` completed with what was seen before for its MAC or GUID."""
        seen = (self.by_mac(ident.mac) if ident.mac else None) or \
            (self.by_guid(ident.guid) if ident.guid else None)
        return ident.merged_with(seen) if seen is not None else ident
