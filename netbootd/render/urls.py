"""Every URL and TFTP path netbootd hands out, built in one place.

URLs for build files name the exact build (``/builds/<name>/<version>/<file>``), so a node that
is mid-boot while a channel moves still gets one consistent set of files. Node-specific URLs are
keyed by the node's MAC with dashes. First-boot URLs (NoCloud seed, kickstart, phone-home, the
ready/failed report and the installer's reimage report) also carry the node's signed token
(render/tokens.py) as a path segment: NoCloud appends ``meta-data``/``user-data`` to its seed
URL, so a query string would be lost. A ``SiteUrls`` mints tokens only once stamped with the
time of the answer (``at(now)``).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from netbootd.core.identity import normalize_mac
from netbootd.render.tokens import FirstbootTokens
from netbootd.store.catalog import Build


@dataclass(frozen=True, slots=True)
class SiteUrls:
    http_base: str  # e.g. http://10.77.0.1:8080, no trailing slash
    server_ip: str
    tokens: FirstbootTokens
    now: float | None = None  # when the answer carrying these URLs is issued

    def at(self, now: float) -> SiteUrls:
        return replace(self, now=now)

    def token(self, node_key: str, subject: str) -> str:
        """The node's token for ``subject``: a build ref, or ``reimage_subject(action)``."""
        if self.now is None:
            raise ValueError("SiteUrls.at(now) first: a first-boot token needs the issue time")
        return self.tokens.issue(normalize_mac(node_key), subject, self.now)

    def build_file(self, build: Build, name: str) -> str:
        return f"{self.http_base}/builds/{build.name}/{build.version}/{name}"

    def build_prefix(self, build: Build) -> str:
        return f"{self.http_base}/builds/{build.name}/{build.version}/"

    def nocloud(self, node_key: str, build: Build) -> str:
        return (f"{self.http_base}/nocloud/{node_key}/{build.name}/{build.version}/"
                f"{self.token(node_key, build.ref)}/")

    def nocloud_kernel_arg(self, node_key: str, build: Build) -> str:
        """The kernel argument that points cloud-init at the node's seed. ``nocloud-net``:
        cloud-init 22.4 (Debian 12) takes a plain ``ds=nocloud`` seed for local mode and its
        network stage then ignores it; later releases accept both spellings
        (docs/boot-flows.md). A GRUB ``linux`` line must quote it: GRUB parses ``;``."""
        return f"ds=nocloud-net;s={self.nocloud(node_key, build)}"

    def report(self, node_key: str, build: Build) -> str:
        """Where the booted node POSTs cloud-init's final status (ready / failed)."""
        return (f"{self.http_base}/report/{node_key}/{build.name}/{build.version}/"
                f"{self.token(node_key, build.ref)}")

    def phone_home(self, node_key: str, build: Build) -> str:
        return (f"{self.http_base}/phone-home/{node_key}/{build.name}/{build.version}/"
                f"{self.token(node_key, build.ref)}")

    def esxi_boot_cfg(self, node_key: str, build: Build) -> str:
        return f"{self.http_base}/esxi/{node_key}/{build.name}/{build.version}/boot.cfg"

    def kickstart(self, node_key: str, build: Build) -> str:
        return (f"{self.http_base}/ks/{node_key}/{build.name}/{build.version}/"
                f"{self.token(node_key, build.ref)}/ks.cfg")

    def reimage_report(self, node_key: str, action_id: int) -> str:
        token = self.token(node_key, reimage_subject(action_id))
        return f"{self.http_base}/reimage/{node_key}/{action_id}/{token}/report"

    def ipxe_node(self) -> str:
        return f"{self.http_base}/ipxe/node.ipxe"


def reimage_subject(action_id: int) -> str:
    """What a reimage report's token is bound to; never a build ref (those hold a '/')."""
    return f"reimage-action:{action_id}"


def tftp_esxi_boot_cfg(node_key: str, build: Build) -> str:
    return f"esxi/{node_key}/{build.name}/{build.version}/boot.cfg"
