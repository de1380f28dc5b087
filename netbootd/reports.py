"""The edge of what a booted node sends back: first-boot files, phone-home, reports.

The answers are pure functions in answers_reports.py; this module is the pipe around them:
it parses the node key, enriches the identity with what was seen of it (``Sightings``),
reads what the World does not hold (the reimage order's row), calls the answer with the
World and ``now``, and applies what the answer returned (events, counters, the node's state,
the order's completion), logging as it goes.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable

from netbootd.answer_base import AnswerBase
from netbootd.answers import Effect
from netbootd.answers_reports import (
    FinishReimage,
    PhonedHome,
    Reported,
    answer_firstboot,
    answer_phone_home,
    answer_reimage_report,
    answer_report,
    check_token,
    node_mac,
)
from netbootd.core.identity import ClientIdentity, normalize_mac
from netbootd.errors import NotFound
from netbootd.render.tokens import TokenRefused
from netbootd.state.registry import Action

log = logging.getLogger("netbootd.decision")


class NodeReports(AnswerBase):
    def _known(self, mac: str, client_ip: str | None) -> ClientIdentity:
        """The node a URL names, with what its packets showed (GUID, arch, classes)."""
        return self.sightings.enrich(ClientIdentity(mac=mac, ip=client_ip))

    def _refused(self, e: TokenRefused, what: str, mac: str, subject: str,
                 client_ip: str | None) -> None:
        self.counters.inc("firstboot_refused", reason=e.reason)
        log.warning("first-boot refused: %s for mac=%s (%s) from %s: %s",
                    what, mac, subject, client_ip, e)

    def check_token(self, node_key: str, subject: str, token: str, what: str,
                    client_ip: str | None) -> str:
        """The node's MAC if ``token`` opens ``what`` (a first-boot file, phone-home, a reimage
        report) of ``node_key`` for ``subject`` (the build ref, or the reimage action); else
        TokenRefused (logged and counted, without the token) or NotFound (not a node key)."""
        w = self.refresh()
        mac = node_mac(node_key)
        try:
            check_token(w, mac, subject, token, self.clock())
        except TokenRefused as e:
            self._refused(e, what, mac, subject, client_ip)
            raise
        return mac

    def firstboot(self, node_key: str, build_ref: str, what: str, token: str,
                  client_ip: str | None) -> str:
        """First-boot file ``what`` of the node booting ``build_ref`` (answers_reports.py)."""
        w = self.refresh()
        mac = node_mac(node_key)
        try:
            text, effects = answer_firstboot(w, self._known(mac, client_ip), build_ref, what,
                                             token, self.clock())
        except TokenRefused as e:
            self._refused(e, what, mac, build_ref, client_ip)
            raise
        self.apply(effects)
        return text

    def phone_home(self, node_key: str, build_ref: str, token: str, client_ip: str | None,
                   fields: dict[str, str]) -> None:
        """A node reports it booted, with the token its first-boot config carried."""
        w = self.refresh()
        mac = node_mac(node_key)
        try:
            changes = answer_phone_home(w, self._known(mac, client_ip), build_ref, token,
                                        fields, self.clock())
        except TokenRefused as e:
            self._refused(e, "phone-home", mac, build_ref, client_ip)
            raise
        self._apply_reports(changes)

    def boot_report(self, node_key: str, build_ref: str, client_ip: str | None,
                    fields: dict[str, str]) -> str:
        """The node's final word after cloud-init. The caller checked the token."""
        w = self.refresh()
        mac = normalize_mac(node_key)
        state, changes = answer_report(w, self._known(mac, client_ip), build_ref, fields)
        self._apply_reports(changes)
        return state

    def reimage_report(self, node_key: str, action_id: int, client_ip: str | None,
                       fields: dict[str, str]) -> Action:
        """The installer's report. ``done``: the node boots local from now on; anything else:
        the order stays open (the node stays in reimage) with the reason recorded."""
        w = self.refresh()
        if self.registry is None:
            raise NotFound("this server keeps no reimage orders (quick mode)")
        mac = normalize_mac(node_key)
        # Read here, not from the World: the World holds open orders only, and a report on
        # a closed, superseded or another node's order must say which (answers_reports.py).
        action = self.registry.action(action_id)
        finish, *rest = answer_reimage_report(w, mac, action_id, action, fields)
        assert isinstance(finish, FinishReimage)  # the order is finished first
        done = self.registry.finish_reimage(finish.action_id, ok=finish.ok,
                                            reason=finish.reason, now=self.clock())
        self.refresh()  # the order is closed: the next request is answered from a new World
        log.info("reimage %s node=%s mac=%s image=%s: %s", "done" if finish.ok else "FAILED",
                 finish.node, mac, finish.image, finish.reason)
        self._apply_reports(rest)
        return done

    def _apply_reports(self, changes: Iterable[Effect | PhonedHome | Reported
                                               | FinishReimage]) -> None:
        now = self.clock()
        for c in changes:
            if isinstance(c, PhonedHome):
                log.info("phone-home mac=%s node=%s hostname=%s build=%s claimed=%s",
                         c.mac, c.node, c.hostname, c.build, c.claimed_build)
                self.state.phoned_home(c.mac, now, build=c.build, hostname=c.hostname,
                                       ip=c.ip, node=c.node, claimed_build=c.claimed_build,
                                       **c.detail)
            elif isinstance(c, Reported):
                log.info("report mac=%s node=%s build=%s: %s%s", c.mac, c.node, c.build,
                         c.state, "" if not c.errors else f" ({c.errors} errors)")
                self.state.reported(c.mac, now, state=c.state, build=c.build, ip=c.ip,
                                    node=c.node, **c.detail)
                if self.on_report is not None:
                    self.on_report()
            elif isinstance(c, FinishReimage):
                raise AssertionError("an order is finished by reimage_report")
            else:
                self.apply((c,))
