"""Wiring and lifecycle: build everything from one Config, start it, reload it, stop it.

The only module that knows every part. ``Service.start`` opens the DHCP (67, 4011), TFTP and
HTTP endpoints; ``reload`` (SIGHUP) re-reads the config and the store and swaps them into the
running Responder without dropping transfers in flight (ports and addresses need a restart).
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import json
import logging
import os
import resource
import signal
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from aiohttp import web

from netbootd.admin import Admin, load_or_create_token
from netbootd.config import Config, load_config
from netbootd.dhcp.endpoint import start_dhcp_endpoint
from netbootd.dhcp.probe import interface_of, probe
from netbootd.dhcp.proxy import BootAnswer, PxeRequest
from netbootd.dhcp.server import lease_server_for
from netbootd.dhcp.server_endpoint import DhcpServerEndpoint, start_dhcp_server_endpoint
from netbootd.errors import ConfigError, OtherDhcpServer, StartError
from netbootd.metrics import Counters
from netbootd.metrics_export import make_registry
from netbootd.render.environment import make_environment
from netbootd.render.node_files import NodeRenderer
from netbootd.render.tokens import FirstbootTokens
from netbootd.render.urls import SiteUrls
from netbootd.responder import Rendered, Responder
from netbootd.sdnotify import Notifier, watchdog_interval, watchdog_loop
from netbootd.state.events import StateDB
from netbootd.state.keyfile import KeyFileError, create_key, read_key
from netbootd.state.leases import LeaseDB
from netbootd.state.registry import Registry
from netbootd.store.builds import HashCache, load_store
from netbootd.store.catalog import BuildCatalog
from netbootd.tftp.endpoint import TftpServer, TransferRecord
from netbootd.tftp.session import SessionLimits, TftpSource
from netbootd.tftp.sources import BytesSource, FileSource
from netbootd.web.admin_routes import make_admin_app
from netbootd.web.app import make_app
from netbootd.web.limits import limit_connections

log = logging.getLogger("netbootd")

# Boot events are committed in batches this long after the first one (state/events.py): one
# transaction per event cost more than the DHCP answer itself (docs/performance.md).
STATE_FLUSH_S = 0.05


def make_responder(config: Config, state: StateDB, catalog: BuildCatalog | None = None,
                   registry: Registry | None = None, *, key: bytes,
                   clock: Callable[[], float] = time.time,
                   counters: Counters | None = None) -> tuple[Responder, list[str]]:
    """The Responder for ``config``; ``catalog`` given (quick mode) or read from the store,
    which is then watched for imports and removals."""
    problems: list[str] = []
    store_dir = None
    verify = HashCache() if config.server.verify_builds else None
    if catalog is None:
        store_dir = config.server.store_dir
        catalog, problems = load_store(store_dir, verify)
    return Responder(config, catalog, state, make_renderer(config, catalog, key),
                     registry=registry, store_dir=store_dir, clock=clock,
                     counters=counters, verify=verify), problems


def make_renderer(config: Config, catalog: BuildCatalog, key: bytes) -> NodeRenderer:
    tokens = FirstbootTokens(key, config.firstboot.token_ttl)
    return NodeRenderer(make_environment(config.server.templates_dir),
                        SiteUrls(config.http_base, config.server.address, tokens), catalog,
                        config.reimage.target)


def firstboot_key(config: Config) -> bytes:
    """The first-boot HMAC key; the default one is created (0600) at first start."""
    if config.firstboot.key_file is None:
        create_key(config.firstboot_key_file)
    return read_key(config.firstboot_key_file)


@dataclass
class Service:
    config: Config
    config_path: Path | None = None
    catalog: BuildCatalog | None = None  # fixed catalog (quick mode); else the store
    counters: Counters = field(default_factory=Counters)
    clock: Callable[[], float] = time.time  # tests pin it; `render --at` then agrees

    def __post_init__(self) -> None:
        key = firstboot_key(self.config)  # before anything opens: a bad key stops the start
        self.state = StateDB(self.config.events_database,
                             max_nodes=self.config.state.max_nodes,
                             max_events=self.config.state.max_events, counters=self.counters)
        self.registry = Registry(self.config.intent_database)
        self.responder, problems = make_responder(self.config, self.state, self.catalog,
                                                  self.registry, key=key, clock=self.clock,
                                                  counters=self.counters)
        for p in problems:
            log.warning("store: %s", p)
        self.metrics_registry = make_registry(self.counters, self._gauges)
        self._transports: list[asyncio.BaseTransport] = []
        self._tftp: TftpServer | None = None
        self._http: web.AppRunner | None = None
        self._api: web.AppRunner | None = None
        self.admin: Admin | None = None
        self.http_port: int | None = None
        self.api_port: int | None = None
        self.tftp_port: int | None = None
        self.leases_db: LeaseDB | None = None  # server mode only
        self.dhcp_server: DhcpServerEndpoint | None = None

    def _gauges(self) -> dict[str, tuple[str, float]]:
        """Levels read at scrape time (help text, value)."""
        tftp = self._tftp
        return {
            "tftp_active_sessions": ("TFTP transfers in flight",
                                     tftp.active_sessions if tftp is not None else 0),
            "builds": ("builds in the catalog being served", len(self.responder.catalog.refs())),
        }

    # -- adapters between endpoints and the responder -----------------------------------------
    def _dhcp_answer(self, req: PxeRequest) -> BootAnswer | None:
        return self.responder.dhcp_boot_target(req.identity, is_ipxe=req.is_ipxe,
                                               http_boot=req.http_boot,
                                               message=req.answer_kind)

    def _tftp_resolve(self, filename: str, client: tuple[str, int]) -> TftpSource:
        found = self.responder.tftp_lookup(filename, client[0])
        if isinstance(found, Rendered):
            return BytesSource(found.text.encode())
        return FileSource(found.path)  # NotFound / PathRefused when it cannot be opened

    def _tftp_done(self, rec: TransferRecord) -> None:
        self.responder.tftp_done(rec.filename, rec.client_ip, str(rec.outcome),
                                 rec.bytes_transferred)

    # -- lifecycle ---------------------------------------------------------------------------------
    async def start(self) -> None:
        c = self.config
        raise_descriptor_limit(c.tftp.max_sessions + c.http.max_connections + 256)
        loop = asyncio.get_running_loop()
        self.state.defer_writes(lambda flush: loop.call_later(STATE_FLUSH_S, flush))
        if c.dhcp.enabled and c.dhcp.mode == "server":
            await self._start_dhcp_server(loop)
        if c.dhcp.enabled:
            # Server mode answers udp/67 itself (above); the 4011 boot server stays.
            ports = (c.dhcp.proxy_port,) if c.dhcp.mode == "server" else (c.dhcp.port,
                                                                           c.dhcp.proxy_port)
            for port in ports:
                with _binding("dhcp", c.dhcp.listen, port):
                    transport, _ = await start_dhcp_endpoint(
                        loop, address=c.dhcp.listen, port=port, interface=c.server.interface,
                        handler=self._dhcp_answer, counters=self.counters,
                        offer_bootfile=c.dhcp.offer_bootfile,
                        role="proxy" if port == c.dhcp.proxy_port else "dhcp",
                        relay_port=c.dhcp.relay_port,
                        observer=lambda mac, ip: self.responder.learn_ip(ip, mac))
                self._transports.append(transport)
        if c.tftp.enabled:
            limits = SessionLimits(max_blksize=c.tftp.max_blksize,
                                   max_windowsize=c.tftp.max_windowsize,
                                   timeout=c.tftp.timeout, retries=c.tftp.retries)
            self._tftp = TftpServer(resolver=self._tftp_resolve, limits=limits,
                                    counters=self.counters, on_transfer_done=self._tftp_done,
                                    max_sessions=c.tftp.max_sessions,
                                    max_sessions_per_client=c.tftp.max_sessions_per_client)
            with _binding("tftp", c.tftp.listen, c.tftp.port):
                await self._tftp.start(c.tftp.listen, c.tftp.port, c.server.interface)
            self.tftp_port = self._tftp.port
        # access_log=None: aiohttp's access log would print first-boot tokens; the app's own
        # middleware logs requests with the token redacted.
        runner = web.AppRunner(make_app(self.responder, self.metrics_registry), access_log=None)
        await runner.setup()
        self._http = runner
        assert runner.server is not None
        limit_connections(runner.server, c.http.max_connections, self.counters)
        # reuse_address: after a crash the port may still have connections in TIME_WAIT or
        # FIN_WAIT; without it a restart fails with "address in use" for a minute or more.
        site = web.TCPSite(runner, c.http.listen, c.http.port, reuse_address=True)
        with _binding("http", c.http.listen, c.http.port):
            await site.start()
        self.http_port = int(runner.addresses[0][1]) if runner.addresses else c.http.port
        if c.admin.enabled:
            await self._start_api()
        log.info("netbootd serving: address=%s dhcp=%s tftp=%s http=%s builds=%s",
                 c.server.address, c.dhcp.enabled, self.tftp_port, self.http_port,
                 ", ".join(self.responder.catalog.refs()) or "none")

    async def _start_dhcp_server(self, loop: asyncio.AbstractEventLoop) -> None:
        """Server mode: probe the link for another DHCP server, load the leases, bind 67."""
        c = self.config
        interface = c.server.interface or interface_of(c.server.address)
        if c.dhcp.probe:
            try:
                found = await probe(interface=interface, timeout=c.dhcp.probe_timeout)
            except OSError as e:
                raise StartError(f"dhcp: cannot probe for other DHCP servers from udp/68 on "
                                 f"{interface or 'this host'}: {os.strerror(e.errno or 0)}; "
                                 "run as root (or with CAP_NET_RAW and CAP_NET_BIND_SERVICE), "
                                 "or set dhcp.probe = false") from e
            others = [s for s in found if s != c.server.address]
            if others:
                raise OtherDhcpServer(
                    f"dhcp: another DHCP server answers on {interface or 'this link'}: "
                    f"{', '.join(others)}; two servers would hand out conflicting addresses. "
                    "Stop it (or set [dhcp] mode = \"proxy\" to boot alongside it), or set "
                    "dhcp.probe = false if it serves other clients only")
        self.leases_db = LeaseDB(c.server.state_dir / "leases.sqlite3")
        self.leases_db.defer_writes(lambda flush: loop.call_later(STATE_FLUSH_S, flush))
        leases = lease_server_for(c, self.leases_db.load(), relay_port=c.dhcp.relay_port)
        self.dhcp_server = DhcpServerEndpoint(
            leases, self._dhcp_answer, self.counters, offer_bootfile=c.dhcp.offer_bootfile,
            on_changes=self.leases_db.apply, clock=self.clock,
            observer=lambda mac, ip: self.responder.learn_ip(ip, mac))
        with _binding("dhcp", c.dhcp.listen, c.dhcp.port):
            transport = await start_dhcp_server_endpoint(
                loop, address=c.dhcp.listen, port=c.dhcp.port, interface=c.server.interface,
                endpoint=self.dhcp_server)
        self._transports.append(transport)
        log.info("dhcp server mode: pools %s, %d leases loaded",
                 ", ".join(f"{p.name}={p.first}-{p.last}" for p in c.dhcp.pools),
                 len(leases.all_leases()))

    async def _start_api(self) -> None:
        """The admin API on its own listener: loopback TCP, or a unix socket (0600)."""
        c = self.config
        token = load_or_create_token(c.admin_token_file)
        self.admin = Admin(c)
        runner = web.AppRunner(make_admin_app(self.admin, token), access_log=None)
        await runner.setup()
        site: web.BaseSite
        if c.admin.socket is not None:
            c.admin.socket.unlink(missing_ok=True)
            site = web.UnixSite(runner, str(c.admin.socket))
            with _binding("admin", str(c.admin.socket), None):
                await site.start()
            os.chmod(c.admin.socket, 0o600)
        else:
            site = web.TCPSite(runner, c.admin.listen, c.admin.port, reuse_address=True)
            with _binding("admin", c.admin.listen, c.admin.port):
                await site.start()
            self.api_port = int(runner.addresses[0][1])
        self._api = runner

    async def stop(self) -> None:
        for t in self._transports:
            t.close()
        self._transports.clear()
        if self._tftp is not None:
            await self._tftp.stop()
            self._tftp = None
        for runner in (self._http, self._api):
            if runner is not None:
                await runner.cleanup()
        self._http = self._api = None
        if self.admin is not None:
            self.admin.close()
            self.admin = None
        self.state.close()
        self.registry.close()
        if self.leases_db is not None:
            self.leases_db.close()
            self.leases_db = None
        # One line with every counter, so a stopped server's drops and limits stay on record.
        log.info("counters: %s", json.dumps(self.counters.snapshot(), sort_keys=True))

    def reload(self) -> None:
        """Re-read config and store; keep the old ones if the new config is invalid."""
        if self.config_path is None:
            log.info("reload: quick mode has no config file; nothing to reload")
            return
        try:
            new = load_config(self.config_path)
            key = firstboot_key(new)
        except (ConfigError, KeyFileError) as e:
            log.error("reload refused, keeping the running config: %s", e)
            return
        if not new.server.verify_builds:
            self.responder.verify = None
        elif self.responder.verify is None:
            self.responder.verify = HashCache()
        catalog, problems = load_store(new.server.store_dir, self.responder.verify)
        for p in problems:
            log.warning("store: %s", p)
        self.responder.reconfigure(new, catalog, make_renderer(new, catalog, key))
        if self.admin is not None:
            self.admin.config = new  # listener address and token need a restart
        self.config = new
        log.info("reloaded %s: builds=%s", self.config_path, ", ".join(catalog.refs()))


@contextlib.contextmanager
def _binding(what: str, address: str, port: int | None) -> Iterator[None]:
    """Turn a failed bind into a StartError that says which socket and what to check."""
    try:
        yield
    except OSError as e:
        hint = {errno.EADDRINUSE: "another server (dnsmasq, tftpd-hpa, a second netbootd) "
                                  "holds it; stop it or change the port",
                errno.EACCES: "ports below 1024 need root or CAP_NET_BIND_SERVICE",
                errno.EADDRNOTAVAIL: "the address is not on any interface of this host"}
        # asyncio rewords the error of create_server; the errno says it plainly.
        reason = os.strerror(e.errno) if e.errno else str(e)
        where = address if port is None else f"{address}:{port}"  # a unix socket has no port
        raise StartError(f"{what}: cannot listen on {where}: {reason}; "
                         f"{hint.get(e.errno or 0, 'check the address and port')}") from e


def raise_descriptor_limit(wanted: int) -> None:
    """Lift the soft RLIMIT_NOFILE towards ``wanted`` (each transfer and connection holds one).

    systemd and most shells start services with a soft limit of 1024, below the default
    tftp.max_sessions plus http.max_connections; the hard limit is usually far higher.
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    if soft != resource.RLIM_INFINITY and soft < target:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    if target < wanted:
        log.warning("open-file limit %d is below the %d that tftp.max_sessions and "
                    "http.max_connections need; raise LimitNOFILE", hard, wanted)


async def serve(service: Service, ready: asyncio.Event | None = None,
                notifier: Notifier | None = None) -> None:
    """Run until SIGTERM/SIGINT; SIGHUP reloads. Tells systemd (sdnotify) when every listener
    is bound, around each reload and when stopping, and pings its watchdog if asked to."""
    notifier = notifier if notifier is not None else Notifier.from_environment()
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()

    def reload() -> None:
        notifier.reloading()
        try:
            service.reload()
        finally:
            notifier.ready(status=_status(service))

    loop.add_signal_handler(signal.SIGTERM, stop.set)
    loop.add_signal_handler(signal.SIGINT, stop.set)
    loop.add_signal_handler(signal.SIGHUP, reload)
    watchdog: asyncio.Task[None] | None = None
    try:
        # Inside the try: if one endpoint fails to bind, those already open are closed.
        await service.start()
        notifier.ready(status=_status(service))  # only now: every listener is bound
        if (interval := watchdog_interval()) is not None and notifier.enabled:
            watchdog = asyncio.create_task(watchdog_loop(notifier, interval))
        if ready is not None:
            ready.set()
        await stop.wait()
    finally:
        notifier.stopping()
        if watchdog is not None:
            watchdog.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watchdog
        for s in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            with contextlib.suppress(Exception):
                loop.remove_signal_handler(s)
        await service.stop()
        log.info("netbootd stopped")


def _status(service: Service) -> str:
    """One line for `systemctl status`."""
    return (f"serving {len(service.responder.catalog.refs())} builds; tftp port "
            f"{service.tftp_port}, http port {service.http_port}")
