"""Prometheus exposition of the service's Counters (prometheus-client, a custom collector).

Endpoints keep counting into ``netbootd.metrics.Counters`` (a plain object, no Prometheus
types in the protocol code); at scrape time ``CountersCollector`` turns every series into a
Prometheus counter ``netbootd_<name>_total`` with the same labels, adds gauges read from the
running service (TFTP sessions in flight) and ``netbootd_limits_hit_total``, a view of the
series that mean "a configured limit refused something". Each Service has its own
``CollectorRegistry``: nothing is registered in prometheus-client's global registry, so two
services in one process (tests) never share or collide.

Label values are bounded by construction: drop reasons are fixed strings, routes are route
patterns (not paths), builds are those the server signed a token for. A scanner cannot make
a series per request, and no token, MAC or path appears in a label.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.process_collector import ProcessCollector
from prometheus_client.registry import Collector

from netbootd.metrics import Counters

PREFIX = "netbootd_"

HELP: dict[str, str] = {
    "dhcp_received": "DHCP datagrams received",
    "dhcp_answered": "DHCP offers (udp/67) and acks (udp/4011) sent, by type",
    "dhcp_ignored": "DHCP packets not answered, by reason (not-pxe, wrong message type...)",
    "dhcp_malformed": "DHCP datagrams that did not parse, by reason; dropped",
    "dhcp_declined": "PXE clients the planner chose not to boot",
    "dhcp_errors": "unexpected errors while handling a DHCP datagram (dropped, logged)",
    "tftp_requests": "TFTP read/write requests received",
    "tftp_transfers": "TFTP transfers finished, by outcome",
    "tftp_bytes_sent": "payload bytes sent in TFTP DATA packets",
    "tftp_errors": "TFTP socket or internal errors",
    "tftp_refused": "TFTP requests refused with an ERROR packet, by reason",
    "tftp_malformed": "TFTP datagrams that did not parse, by reason; dropped",
    "tftp_ignored": "TFTP datagrams ignored, by reason",
    "tftp_retransmits": "TFTP DATA packets sent again after a timeout",
    "tftp_superseded": "TFTP transfers ended by a new request of their client, by why",
    "tftp_evicted": "silent TFTP transfers ended to admit a request at a session limit",
    # An edge ([origin] url): what it pulled from its origin (store/origin_*.py).
    "origin_fetched_bytes": "bytes of blobs an edge downloaded from its origin",
    "origin_blobs_verified": "blobs an edge downloaded whose sha256 matched (then cached)",
    "origin_blobs_refused": "blobs an edge discarded, by reason (sha256, size, http)",
    "origin_fetch_errors": "blob downloads that failed: origin unreachable, timed out",
    "origin_waits": "requests that waited for a blob to be fetched",
    "origin_wait_timeouts": "requests that gave up waiting for a fetch ([origin] wait)",
    "origin_evicted_blobs": "blobs evicted from an edge's cache (least recently used)",
    "origin_evicted_bytes": "bytes evicted from an edge's cache",
    "origin_cache_over_bound": "evictions that could not meet cache_max (all pinned or held)",
    "origin_syncs": "looks at the origin's build index that succeeded",
    "origin_sync_failures": "looks at the origin's build index that failed",
    "origin_manifests": "manifests an edge verified and added to its catalog",
    "origin_manifests_refused": "manifests refused: wrong sha256, unparsable, misnamed",
    "origin_prefetched_builds": "builds an edge fetched completely in the background",
    "http_requests": "HTTP requests, by route pattern and status",
    "boots": "nodes that fetched their first-boot config (NoCloud meta-data, kickstart), by build",
    "phone_homes": "authenticated phone-home reports, by the build the node was served",
    "firstboot_refused": "first-boot or phone-home requests refused for their token, by reason",
    "boot_reports": "ready/failed reports after cloud-init finished, by the state they set",
}

# Counters without labels, exported as 0 before their first event: a scrape (and an alert on
# rate()) sees the series from the start instead of a gap.
UNLABELLED = ("dhcp_received", "dhcp_declined", "dhcp_errors", "tftp_requests",
              "tftp_bytes_sent", "tftp_errors", "tftp_retransmits")

# Series that count a configured limit refusing work: (counter, label, value) -> limit name.
LIMITS: dict[tuple[str, str, str], str] = {
    ("tftp_refused", "reason", "busy"): "tftp.max_sessions",
    ("tftp_refused", "reason", "busy-client"): "tftp.max_sessions_per_client",
    ("http_limited", "reason", "connections"): "http.max_connections",
    ("state_dropped", "reason", "node-cap"): "state.max_nodes",
}


class CountersCollector(Collector):
    """Reads ``counters`` and ``gauges()`` at every scrape; holds no values of its own."""

    def __init__(self, counters: Counters,
                 gauges: Callable[[], Mapping[str, tuple[str, float]]]) -> None:
        self._counters = counters
        self._gauges = gauges

    def collect(self) -> Iterator[Metric]:
        by_name: dict[str, list[tuple[dict[str, str], int]]] = {n: [] for n in UNLABELLED}
        limits: dict[str, int] = {}
        for name, labels, value in self._counters.series():
            by_name.setdefault(name, []).append((labels, value))
            for key, val in labels.items():
                if (limit := LIMITS.get((name, key, val))) is not None:
                    limits[limit] = limits.get(limit, 0) + value
        for name, rows in by_name.items():
            label_names = sorted({k for labels, _ in rows for k in labels})
            family = CounterMetricFamily(PREFIX + name, HELP.get(name, name.replace("_", " ")),
                                         labels=label_names)
            for labels, value in rows or [({}, 0)]:
                family.add_metric([labels.get(k, "") for k in label_names], value)
            yield family
        hit = CounterMetricFamily(PREFIX + "limits_hit", "requests refused by a configured "
                                  "limit, by limit (config key)", labels=["limit"])
        for limit in sorted(set(LIMITS.values())):
            hit.add_metric([limit], limits.get(limit, 0))
        yield hit
        for name, (help_text, level) in sorted(self._gauges().items()):
            yield GaugeMetricFamily(PREFIX + name, help_text, value=level)


def make_registry(counters: Counters,
                  gauges: Callable[[], Mapping[str, tuple[str, float]]]) -> CollectorRegistry:
    """A registry of its own for one service: its counters, gauges and process metrics."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(CountersCollector(counters, gauges))
    ProcessCollector(namespace="netbootd", registry=registry)
    return registry


def exposition(registry: CollectorRegistry) -> bytes:
    """The Prometheus text exposition format of ``registry``."""
    return bytes(generate_latest(registry))
