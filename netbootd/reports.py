"""What a booted node sends back: first-boot files behind its token, phone-home, reports.

Each is opened only by the token the node's own first-boot config carried (render/tokens.py),
so a host that was never handed that config cannot fetch another's secrets or fake a report.
"""

from __future__ import annotations

import logging

from netbootd.answer_base import AnswerBase
from netbootd.core.identity import ClientIdentity, normalize_mac
from netbootd.core.plan import BootPlan
from netbootd.core.report import parse_boot_report
from netbootd.errors import NotFound
from netbootd.render.tokens import TokenRefused
from netbootd.state.registry import Action

log = logging.getLogger("netbootd.decision")


class NodeReports(AnswerBase):
    def check_token(self, node_key: str, subject: str, token: str, what: str,
                    client_ip: str | None) -> str:
        """The node's MAC if ``token`` opens ``what`` (a first-boot file, phone-home, a reimage
        report) of ``node_key`` for ``subject`` (the build ref, or the reimage action); else
        TokenRefused (logged and counted, without the token) or NotFound (not a node key)."""
        w = self.refresh()
        try:
            mac = normalize_mac(node_key)
        except ValueError:
            raise NotFound(f"{node_key!r} is not a node key (MAC with dashes)") from None
        try:
            w.urls.tokens.check(token, mac, subject, self.clock())
        except TokenRefused as e:
            self.counters.inc("firstboot_refused", reason=e.reason)
            log.warning("first-boot refused: %s for mac=%s (%s) from %s: %s",
                        what, mac, subject, client_ip, e)
            raise
        return mac

    def firstboot(self, node_key: str, build_ref: str, what: str, token: str,
                  client_ip: str | None) -> str:
        """First-boot file ``what`` of the node booting ``build_ref`` (named by the URL, so a
        node that picked a build at a menu, or booted just before a change, gets its own),
        for a client that shows this node's token for this build (TokenRefused otherwise)."""
        w = self.refresh()
        self.check_token(node_key, build_ref, token, what, client_ip)
        if what == "vendor-data":  # netbootd has none; asked by cloud-init, so answered empty
            return ""
        plan = self._plan_by_key(w, node_key, client_ip, build_ref)
        renderer = self._renderer(w)
        render = {"meta-data": renderer.meta_data, "user-data": renderer.user_data,
                  "network-config": renderer.network_config, "ks.cfg": renderer.kickstart}[what]
        text = render(plan)
        build = plan.build.ref if plan.build else None
        if what in ("meta-data", "ks.cfg"):  # once per boot: the first file each flow fetches
            self.counters.inc("boots", build=str(build))
        self._event(plan.identity.mac, "firstboot", file=what, build=build)
        return text

    def phone_home(self, node_key: str, build_ref: str, token: str, client_ip: str | None,
                   fields: dict[str, str]) -> None:
        """A node reports it booted. Only with the token its first-boot config carried, so a
        host that was never handed that config cannot fake the report (TokenRefused)."""
        w = self.refresh()
        mac = self.check_token(node_key, build_ref, token, "phone-home", client_ip)
        plan = self._plan(w, ClientIdentity(mac=mac, ip=client_ip))
        node = plan.node if isinstance(plan, BootPlan) else None
        # The build is the one this node was served, signed into its token: cloud-init's own
        # phone_home sends no build field. One the node does send is kept as what it claims.
        claimed = fields.get("build", "")[:200] or None
        hostname = fields.get("hostname", "")[:253]
        log.info("phone-home mac=%s node=%s hostname=%s build=%s claimed=%s",
                 mac, node, hostname, build_ref, claimed)
        self.counters.inc("phone_homes", build=build_ref)
        self.state.phoned_home(mac, self.clock(), build=build_ref, hostname=hostname,
                               ip=client_ip, node=node, claimed_build=claimed,
                               instance_id=fields.get("instance_id", "")[:200],
                               fqdn=fields.get("fqdn", "")[:253] or None,
                               **_optional_fields(fields))

    def boot_report(self, node_key: str, build_ref: str, client_ip: str | None,
                    fields: dict[str, str]) -> str:
        """The node's final word after cloud-init: ``ready`` (status done) or ``failed``
        (anything else, with cloud-init's errors). The caller checked the token."""
        w = self.refresh()
        mac = normalize_mac(node_key)
        report = parse_boot_report(fields)
        plan = self._plan(w, ClientIdentity(mac=mac, ip=client_ip))
        node = plan.node if isinstance(plan, BootPlan) else None
        log.info("report mac=%s node=%s build=%s: %s%s", mac, node, build_ref, report.state,
                 "" if not report.errors else f" ({len(report.errors)} errors)")
        self.counters.inc("boot_reports", state=report.state)
        self.state.reported(mac, self.clock(), state=report.state, build=build_ref,
                            ip=client_ip, node=node, **report.detail())
        return report.state

    def reimage_report(self, node_key: str, action_id: int, client_ip: str | None,
                       fields: dict[str, str]) -> Action:
        """The installer's report. ``done``: the node boots local from now on; anything else:
        the order stays open (the node stays in reimage) with the reason recorded."""
        w = self.refresh()
        if self.registry is None:
            raise NotFound("this server keeps no reimage orders (quick mode)")
        mac = normalize_mac(node_key)
        action = self.registry.action(action_id)
        node = w.inventory.find_node(ClientIdentity(mac=mac))
        if action.kind != "reimage" or node is None or node.name != action.node:
            raise NotFound(f"reimage action {action_id} is not for {mac}")
        ok = fields.get("status") == "done"
        reason = fields.get("reason", "")[:500] if not ok else \
            f"wrote {fields.get('bytes', '?')} bytes, sha256 {fields.get('sha256', '?')[:64]}"
        if not ok and not reason:
            reason = f"installer reported status {fields.get('status', '')[:40]!r}"
        done = self.registry.finish_reimage(action_id, ok=ok, reason=reason, now=self.clock())
        self.refresh()  # the order is closed: the next request is answered from a new World
        log.info("reimage %s node=%s mac=%s image=%s: %s", "done" if ok else "FAILED",
                 action.node, mac, action.image, reason)
        self._event(mac, "reimage-done" if ok else "reimage-failed", node=action.node,
                    image=action.image, action=action_id, reason=reason)
        return done


# Facts a node may add to its phone-home, kept in the event when present: the demo agent
# reports the UEFI Secure Boot state it read (on, off, or none for BIOS).
_REPORTED = {"secure_boot": {"on", "off", "none", "unknown"}}


def _optional_fields(fields: dict[str, str]) -> dict[str, str]:
    return {k: v for k, allowed in _REPORTED.items() if (v := fields.get(k, "")) in allowed}
