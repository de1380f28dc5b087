"""Shared by the QEMU e2e tests: a lab with netbootd serving, and booting a guest in it."""

from __future__ import annotations

import subprocess
from dataclasses import dataclass

from netbootd.lab.demo import NetbootdProcess, timeline, wait_for_event
from netbootd.lab.netlab import Lab
from netbootd.state.events import BootEvent, NodeRecord, StateDB

BOOT_TIMEOUT = 240.0


@dataclass
class LabServer:
    lab: Lab
    nb: NetbootdProcess

    def boot(self, name: str, firmware: str, mac: str, uuid: str | None = None,
             powers_off: bool = True) -> tuple[BootEvent, list[BootEvent]]:
        """Power on a guest, wait for its phone-home; (phone-home event, this boot's events).

        Events from earlier boots of the same MAC are skipped, so a node can be power-cycled."""
        after = self.last_event_id(mac)
        guest = self.lab.start_qemu(name, firmware=firmware,  # type: ignore[arg-type]
                                    mac=mac, uuid=uuid)
        try:
            home = wait_for_event(self.nb.state_db, mac, "phone-home", BOOT_TIMEOUT,
                                  after_id=after, guest=guest)
        except TimeoutError as e:
            raise AssertionError(f"{e}\n--- netbootd log ---\n{self.nb.log_text()[-4000:]}") \
                from None
        try:
            # With power_state poweroff the agent powers off after phoning home.
            guest.wait(60 if powers_off else 0.1)
        except subprocess.TimeoutExpired:
            guest.kill()
        return home, timeline(self.nb.state_db, mac, after)

    def last_event_id(self, mac: str) -> int:
        if not self.nb.state_db.exists():
            return 0
        events = timeline(self.nb.state_db, mac)
        return events[-1].id if events else 0

    def node(self, mac: str) -> NodeRecord | None:
        with StateDB.open_readonly(self.nb.state_db) as db:
            return db.node(mac)
