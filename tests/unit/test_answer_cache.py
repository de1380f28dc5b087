"""The answer cache (netbootd/answers.py): a node's rendered config is reused only within one
World and one token bucket, so it is byte for byte what a fresh render gives; every request
still records its own events."""

from pathlib import Path

from helpers import make_config, make_store, site_urls
from netbootd.core.identity import Arch, ClientIdentity
from netbootd.core.intent import NodeOverride
from netbootd.core.plan import BootPlan
from netbootd.render.environment import make_environment
from netbootd.render.node_files import NodeRenderer
from netbootd.render.tokens import BUCKET
from netbootd.responder import Rendered, Responder
from netbootd.state.events import StateDB
from netbootd.state.registry import Registry
from netbootd.store.builds import load_store

DB1 = "52:54:00:00:00:02"  # db1: demo/2.0, "role=db"
PXELINUX = "bios/pxelinux.cfg/01-52-54-00-00-00-02"
IP = "10.77.0.50"


class Clock:
    def __init__(self) -> None:
        self.now = 1_800_000_000.0  # the start of a token bucket (a multiple of 60)

    def __call__(self) -> float:
        return self.now


def responder(tmp_path: Path, clock: Clock) -> tuple[Responder, Registry]:
    make_store(tmp_path / "store")
    config = make_config(tmp_path)
    catalog, _ = load_store(config.server.store_dir)
    renderer = NodeRenderer(make_environment(), site_urls("http://10.77.0.1:8080", "10.77.0.1"),
                            catalog)
    registry = Registry(tmp_path / "intent.sqlite3")
    return Responder(config, catalog, StateDB(Path(":memory:")), renderer, clock,
                     registry=registry), registry


def pxelinux(r: Responder) -> str:
    found = r.tftp_lookup(PXELINUX, IP)
    assert isinstance(found, Rendered)
    return found.text


def fresh(r: Responder, now: float) -> str:
    """What the renderer makes without the cache, for db1 in the World being served."""
    plan = r.plan_for(ClientIdentity(mac=DB1, ip=IP))
    assert isinstance(plan, BootPlan)
    return r.world.renderer.at(now).pxelinux_config(plan)


def test_a_repeat_in_one_bucket_is_served_from_the_cache_and_equals_a_fresh_render(
        tmp_path: Path) -> None:
    clock = Clock()
    r, _ = responder(tmp_path, clock)
    first = pxelinux(r)
    clock.now += BUCKET - 1  # same bucket: the same token
    assert pxelinux(r) == first == fresh(r, clock.now)
    assert (r.answer_cache.hits, r.answer_cache.misses) == (1, 1)
    clock.now += 1  # next bucket: a newly issued token, rendered again
    later = pxelinux(r)
    assert later != first and later == fresh(r, clock.now)
    assert r.answer_cache.misses == 2


def test_a_change_of_intent_is_rendered_at_the_next_request(tmp_path: Path) -> None:
    clock = Clock()
    r, registry = responder(tmp_path, clock)
    assert "/builds/demo/2.0/" in pxelinux(r)
    registry.set_override("db1", NodeOverride(build="demo/1.0"), now=clock.now)
    after = pxelinux(r)  # same bucket, new World: not the cached text
    assert "/builds/demo/1.0/" in after and "/builds/demo/2.0/" not in after


def test_every_request_records_its_events_even_when_the_text_is_cached(tmp_path: Path) -> None:
    clock = Clock()
    r, _ = responder(tmp_path, clock)
    ident = ClientIdentity(mac=DB1, arch=Arch.BIOS, user_class="iPXE")
    texts = {r.ipxe_script(ident) for _ in range(3)}
    assert len(texts) == 1 and r.answer_cache.hits == 2
    assert [e.kind for e in r.state.timeline(DB1)].count("ipxe-script") == 3
