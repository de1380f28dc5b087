"""The edge of TFTP file names: parse, read what is known of the asker, answer, apply.

The answers are pure functions in answers_tftp.py. This module reads what they need and the
World does not hold (what the client's packets showed, the MAC learnt at an address, the MAC
stored for a GUID) into one ``Seen`` value before the call, applies the effects after it
(IP -> MAC pairs, events), and looks loader files up on disk (containment in paths.py).
"""

from __future__ import annotations

import logging
from pathlib import Path

from netbootd.answer_base import AnswerBase
from netbootd.answers_reports import node_mac
from netbootd.answers_tftp import (
    EsxiBootCfg,
    LoaderName,
    NodeConfig,
    Question,
    Rendered,
    Seen,
    StaticFile,
    answer_tftp_name,
    tftp_question,
)
from netbootd.errors import NotFound
from netbootd.paths import contain, split_client_path
from netbootd.world import World

log = logging.getLogger("netbootd.decision")

__all__ = ["Rendered", "StaticFile", "TftpNames"]


class TftpNames(AnswerBase):
    def tftp_lookup(self, filename: str, client_ip: str) -> Rendered | StaticFile:
        """Map a TFTP file name to a rendered file or a file on disk; NotFound/PathRefused."""
        w = self.refresh()
        return self._answer(w, tftp_question(w, filename, client_ip))

    def _answer(self, w: World, question: Question) -> Rendered | StaticFile:
        reply, effects = answer_tftp_name(w, question, self._seen(question), self.clock(),
                                          self.answer_cache)
        self.apply(effects)
        if isinstance(reply, LoaderName):
            return StaticFile(self._loader_path(w, reply.path), "loader")
        return reply

    def _seen(self, q: Question) -> Seen:
        """What is known of the clients ``q`` names, read now (answers_tftp.py)."""
        named = q.mac if isinstance(q, (EsxiBootCfg, NodeConfig)) else None
        if named is not None:
            # The name says the MAC (01-<mac>, an ESXi path): only its sighting matters.
            seen = self.sightings.by_mac(named)
            return Seen(by_mac={named: seen}) if seen is not None else Seen.NOTHING
        if not isinstance(q, NodeConfig):
            return Seen.NOTHING
        mac_at = {ip: m for ip in q.ips if (m := self.mac_for_ip(ip))}
        by_guid = {g: s for g in q.guids if (s := self.sightings.by_guid(g))}
        # The state database only for a GUID no packet showed since the start.
        stored = {g: m for g in q.guids
                  if g not in by_guid and (m := self.state.mac_for_guid(g))}
        macs = {m for m in (q.mac, *mac_at.values(), *stored.values()) if m}
        by_mac = {m: s for m in macs if (s := self.sightings.by_mac(m))}
        return Seen(by_mac, by_guid, mac_at, stored)

    def loader_path(self, client_path: str) -> Path:
        return self._loader_path(self.refresh(), client_path)

    def _loader_path(self, w: World, client_path: str) -> Path:
        parts = split_client_path(client_path)
        dirs = w.config.loaders.dirs.get(parts[0])
        if dirs is None or len(parts) < 2:
            raise NotFound(f"no such file: {client_path}")
        rest = "/".join(parts[1:])
        for d in dirs:
            p = contain(d, rest)
            if p.is_file():
                return p
        raise NotFound(f"no such file: {client_path}")

    def tftp_done(self, filename: str, client_ip: str, outcome: str, nbytes: int) -> None:
        mac = self.mac_for_ip(client_ip)
        kind = "tftp-sent" if outcome == "completed" else "tftp-ended"
        self._event(mac, kind, file=filename, bytes=nbytes, outcome=outcome, ip=client_ip)

    def esxi_boot_cfg(self, node_key: str, build_ref: str, client_ip: str) -> str:
        w = self.refresh()
        reply = self._answer(w, EsxiBootCfg(node_mac(node_key), build_ref, client_ip))
        assert isinstance(reply, Rendered)
        return reply.text


