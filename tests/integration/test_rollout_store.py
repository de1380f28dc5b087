"""Rollouts in the intent database (state/rollouts.py) on both backends: a restart reads the
same rollout back, a step is written with its history in one transaction, and two servers
stepping one rollout at once write it once."""

from __future__ import annotations

from netbootd.core.rollout import MoveChannel, NodeReport, step
from netbootd.state.registry import Registry
from netbootd.state.rollouts import Rollouts
from pgserver import Backend

T0 = 1_795_000_000.0


def start(r: Registry) -> int:
    r.set_channel("kvm-stable", "kvm/1", who="ann", why="", now=T0)
    ro, _ = Rollouts(r).create(channel="kvm-stable", build="kvm/2", nodes=["a", "b"], canary=1,
                               batch="1", ready_within=600, max_failed=1, reboot=False,
                               who="ann", now=T0 + 1, previous="kvm/1")
    return ro.id


def test_a_rollout_survives_a_restart_and_pins_what_it_started(backend: Backend) -> None:
    url = backend.db("intent")
    with Registry(url) as r:
        rid = start(r)
        assert set(r.intent(None, frozenset()).rollout) == {"a"}
    with Registry(url) as r:  # a restarted server
        (ro,) = Rollouts(r).active()
        assert ro.id == rid and ro.state.phase == "running" and set(ro.state.nodes) == {"a"}
        pin = r.intent(None, frozenset()).rollout["a"]
        assert (pin.rollout, pin.build, pin.batch) == (rid, "kvm/2", 0)
        assert [h.action for h in r.history("kvm-stable")] == ["set", "rollout-start"]


def test_two_servers_stepping_at_once_write_the_step_once(backend: Backend) -> None:
    url = backend.db("intent")
    with Registry(url) as one, Registry(url) as two:
        rid = start(one)
        reports = [NodeReport("a", "ready", "kvm/2", T0 + 5), NodeReport("b", "ready", "kvm/2",
                                                                           T0 + 9)]
        for now in (T0 + 6, T0 + 10):  # a's report starts b's batch; b's ends the rollout
            seen = [Rollouts(one).get(rid), Rollouts(two).get(rid)]
            steps = [step(x.spec, x.state, reports, "kvm/1", now) for x in seen]
            assert steps[0] == steps[1]  # the same inputs: the same step
            assert Rollouts(one).save(seen[0], *steps[0], now) is True
            assert Rollouts(two).save(seen[1], *steps[1], now) is False  # lost: wrote nothing
        assert any(isinstance(e, MoveChannel) for e in steps[0][1])
        ro = Rollouts(two).get(rid)
        assert ro.state.phase == "done" and ro.version == 2
        assert one.channels()["kvm-stable"] == "kvm/2"
        hist = [(h.action, h.from_build, h.to_build, h.who) for h in two.history("kvm-stable")]
        assert hist == [("set", None, "kvm/1", "ann"),
                        ("rollout-start", "kvm/1", "kvm/2", f"rollout {rid}"),
                        ("set", "kvm/1", "kvm/2", f"rollout {rid}")]
        # The rollout's own entries are not in the rollback stack: back to kvm/1.
        assert two.rollback_target("kvm-stable", None) == "kvm/1"
