"""ProxyDHCP measurements with perfdhcp: relayed PXE DISCOVERs, zero-loss rate and latency.

perfdhcp (ISC Kea, C++) runs in the client namespace and talks to the server's address by
unicast from port 67, so it acts as a relay: giaddr is set to its address and the server
answers the relay's port 67 (netbootd: ``dhcp.relay_port``). Every DISCOVER carries what PXE
firmware sends: option 60 ``PXEClient:Arch:00000:UNDI:002001``, 93 (arch 0, BIOS) and 97
(a GUID); perfdhcp varies the MAC per client (``-R``). ``-i``: DISCOVER-OFFER only, which is
all a ProxyDHCP answers on port 67.

Server mode (``perfdhcp_dora``): full DISCOVER-OFFER-REQUEST-ACK exchanges of plain clients
(no PXE options: the row compares address serving), still relayed, against netbootd with
``[dhcp] mode = "server"`` and against dnsmasq as a DHCP server, both with a /16 pool for the
relay's network. A rate counts only if both halves of every exchange were answered and no
lease was rejected (NAK).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from bench.sandbox import CLIENT_IP, SERVER_IP, BenchError, NetnsPair

VENDOR_CLASS = b"PXEClient:Arch:00000:UNDI:002001"
GUID_OPTION = "00" + "8e1c5a4f2b7d4c399a600f1e2d3c4b5a"
_NUM = r"([0-9.]+)"


@dataclass
class DhcpRun:
    offered: int  # target rate (DISCOVER/s)
    seconds: float
    achieved: float  # perfdhcp's own figure (averaged over the whole run, waits included)
    sent: int
    received: int
    delays_ms: list[float]

    @property
    def drops(self) -> int:
        return self.sent - self.received

    @property
    def zero_loss(self) -> bool:
        # perfdhcp itself may fall short of the asked rate; that is not a server success.
        return self.sent > 0 and self.drops == 0 and \
            self.sent >= 0.9 * self.offered * self.seconds

    def percentile(self, q: float) -> float:
        if not self.delays_ms:
            return float("nan")
        d = sorted(self.delays_ms)
        return d[min(len(d) - 1, round(q / 100 * (len(d) - 1)))]


def perfdhcp(ns: NetnsPair, client_cpus: str, rate: int, seconds: float,
             clients: int = 50000) -> DhcpRun:
    cmd = ["perfdhcp", "-4", "-i", "-r", str(rate), "-p", f"{seconds:g}", "-R", str(clients),
           "-l", CLIENT_IP, "-L", "67", "-W", "1000000",
           "-o", f"60,{VENDOR_CLASS.hex()}", "-o", "93,0000", "-o", f"97,{GUID_OPTION}",
           "-x", "t", SERVER_IP]
    proc = ns.exec("client", client_cpus, cmd, timeout=seconds + 60, check=False)
    out = proc.stdout
    # Exit status 3: "one or more exchanges were unsuccessful", i.e. drops: still a result.
    if proc.returncode not in (0, 3):
        raise BenchError(f"perfdhcp failed ({proc.returncode}): {proc.stderr.strip()[-500:]}")
    sent = _field(out, r"sent packets: (\d+)")
    received = _field(out, r"received packets: (\d+)")
    achieved = float(_match(out, rf"Rate: {_NUM} DISCOVER-OFFER/second") or 0.0)
    delays = [(float(b) - float(a)) * 1000 for a, b in
              re.findall(r"sent / received: ([0-9.]+) / ([0-9.]+)", out)]
    return DhcpRun(rate, seconds, achieved, int(sent), int(received), delays)


def _match(text: str, pattern: str) -> str | None:
    m = re.search(pattern, text)
    return m.group(1) if m else None


def _field(text: str, pattern: str) -> str:
    value = _match(text, pattern)
    if value is None:
        raise BenchError(f"perfdhcp output has no {pattern!r}: {text[:500]}")
    return value


def ladder(ns: NetnsPair, client_cpus: str, rates: list[int],
           seconds: float) -> tuple[int, list[DhcpRun]]:
    """Offered rates in increasing order until the first loss: (highest zero-loss, runs)."""
    best = 0
    runs = []
    for rate in rates:
        r = perfdhcp(ns, client_cpus, rate, seconds)
        runs.append(r)
        if not r.zero_loss:
            break
        best = rate
    return best, runs


@dataclass
class DoraRun:
    offered: int  # target rate (DORA/s)
    seconds: float
    sent: int  # DISCOVERs
    offers: int
    requests: int
    acks: int
    rejected: int  # NAKs, per perfdhcp's "rejected leases"

    @property
    def zero_loss(self) -> bool:
        return (self.sent > 0 and self.offers == self.sent and self.acks == self.requests
                == self.sent and self.rejected == 0
                and self.sent >= 0.9 * self.offered * self.seconds)


def perfdhcp_dora(ns: NetnsPair, client_cpus: str, rate: int, seconds: float,
                  clients: int = 50000) -> DoraRun:
    """Full exchanges at ``rate``/s for ``seconds`` from ``clients`` distinct MACs."""
    cmd = ["perfdhcp", "-4", "-r", str(rate), "-p", f"{seconds:g}", "-R", str(clients),
           "-l", CLIENT_IP, "-L", "67", "-W", "1000000", SERVER_IP]
    proc = ns.exec("client", client_cpus, cmd, timeout=seconds + 60, check=False)
    out = proc.stdout
    if proc.returncode not in (0, 3):
        raise BenchError(f"perfdhcp failed ({proc.returncode}): {proc.stderr.strip()[-500:]}")
    do, _, ra = out.partition("REQUEST-ACK")
    if not ra:
        raise BenchError(f"perfdhcp output has no REQUEST-ACK statistics: {out[:500]}")
    return DoraRun(rate, seconds, int(_field(do, r"sent packets: (\d+)")),
                   int(_field(do, r"received packets: (\d+)")),
                   int(_field(ra, r"sent packets: (\d+)")),
                   int(_field(ra, r"received packets: (\d+)")),
                   int(_field(do, r"rejected leases: (\d+)"))
                   + int(_field(ra, r"rejected leases: (\d+)")))


def dora_ladder(ns: NetnsPair, client_cpus: str, rates: list[int],
                seconds: float) -> tuple[int, list[DoraRun]]:
    """Offered DORA rates in increasing order until the first loss or NAK."""
    best = 0
    runs = []
    for rate in rates:
        r = perfdhcp_dora(ns, client_cpus, rate, seconds)
        runs.append(r)
        if not r.zero_loss:
            break
        best = rate
    return best, runs
