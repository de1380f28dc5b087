"""The rollout state machine (core/rollout.py), every transition on a fake clock."""

from __future__ import annotations

import pytest

from netbootd.core.rollout import (
    History,
    MoveChannel,
    NodeReport,
    Revert,
    RolloutSpec,
    RolloutState,
    StartBatch,
    abort,
    deadline,
    parse_batch,
    parse_duration,
    pause,
    pins,
    resume,
    start,
    step,
)

OLD, NEW = "kvm/2026.11", "kvm/2026.12"
T0 = 1_000_000.0
MIN = 60.0


def spec(nodes: int = 5, canary: int = 2, batch: str = "2", max_failed: int = 1,
         ready_within: float = 15 * MIN) -> RolloutSpec:
    return RolloutSpec(id=7, channel="kvm-stable", build=NEW, previous=OLD,
                       nodes=tuple(f"web{i}" for i in range(1, nodes + 1)), canary=canary,
                       batch=batch, ready_within=ready_within, max_failed=max_failed)


def ready(node: str, ts: float, build: str = NEW) -> NodeReport:
    return NodeReport(node, "ready", build, ts)


def failed(node: str, ts: float, why: str = "cloud-init error: bad user-data") -> NodeReport:
    return NodeReport(node, "failed", NEW, ts, why)


def statuses(state: RolloutState) -> dict[str, str]:
    return {n: s.status for n, s in state.nodes.items()}


def test_durations_and_batches_parse() -> None:
    assert parse_duration("15m") == 900.0
    assert parse_duration("90") == 90.0
    assert parse_duration("2h") == 7200.0
    assert parse_duration("1.5m") == 90.0
    for bad in ("", "15x", "-3m", "0s", "m"):
        with pytest.raises(ValueError):
            parse_duration(bad)
    assert parse_batch("25%") == "25%"
    assert parse_batch(" 03 ") == "3"
    for bad in ("0", "0%", "101%", "x", "-1", "2.5"):
        with pytest.raises(ValueError):
            parse_batch(bad)


def test_batches_by_count_and_percent() -> None:
    assert spec(5, 2, "2").batches() == [("web1", "web2"), ("web3", "web4"), ("web5",)]
    # 25% of 10 nodes is 2.5: rounded up to 3.
    s10 = spec(10, 1, "25%")
    assert [len(b) for b in s10.batches()] == [1, 3, 3, 3]
    assert [len(b) for b in spec(3, 1, "1%").batches()] == [1, 1, 1]
    assert spec(2, 5, "1").batches() == [("web1", "web2")]  # canary larger than the fleet


def test_bad_specs_are_refused() -> None:
    for kw in ({"canary": 0}, {"max_failed": 0}, {"ready_within": 0}):
        with pytest.raises(ValueError):
            spec(**kw)  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        start(spec(nodes=0), T0, "ann")


def test_start_pins_the_canaries_and_records_history() -> None:
    sp = spec()
    state, effects = start(sp, T0, "ann@cli")
    assert state.phase == "running" and state.batch == 0
    assert statuses(state) == {"web1": "waiting", "web2": "waiting"}
    assert isinstance(effects[0], History) and effects[0].action == "rollout-start"
    assert "rollout 7 started by ann@cli" in effects[0].why
    assert effects[1] == StartBatch(0, ("web1", "web2"))
    p = pins([(sp, state)])
    assert set(p) == {"web1", "web2"}
    assert p["web1"].build == NEW and p["web1"].batch == 0 and p["web1"].rollout == 7
    assert deadline(sp, state) == T0 + 15 * MIN


def test_canary_ok_then_batches_then_the_channel_moves() -> None:
    sp = spec()
    s, _ = start(sp, T0, "ann")
    s, eff = step(sp, s, [ready("web1", T0 + 60)], OLD, T0 + 61)
    assert statuses(s) == {"web1": "ready", "web2": "waiting"} and eff == []
    s, eff = step(sp, s, [ready("web1", T0 + 60), ready("web2", T0 + 90)], OLD, T0 + 91)
    assert s.batch == 1 and s.batch_started == T0 + 91
    assert eff == [StartBatch(1, ("web3", "web4"))]
    assert set(pins([(sp, s)])) == {"web1", "web2", "web3", "web4"}
    # A report from before the batch started is about an earlier boot: ignored.
    s, eff = step(sp, s, [ready("web3", T0 + 50)], OLD, T0 + 100)
    assert statuses(s)["web3"] == "waiting" and eff == []
    s, eff = step(sp, s, [ready("web3", T0 + 200), ready("web4", T0 + 210)], OLD, T0 + 211)
    assert eff == [StartBatch(2, ("web5",))]
    s, eff = step(sp, s, [ready("web5", T0 + 300)], OLD, T0 + 301)
    assert s.phase == "done" and not s.active
    assert len(eff) == 1 and isinstance(eff[0], MoveChannel)
    assert eff[0].build == NEW and eff[0].why == "rollout 7: 5 of 5 nodes ready on " + NEW
    assert pins([(sp, s)]) == {}  # done: the channel itself carries the new build
    # Finished: more steps change nothing.
    assert step(sp, s, [failed("web1", T0 + 400)], NEW, T0 + 401) == (s, [])


def test_a_report_of_another_build_is_not_about_the_rollout() -> None:
    sp = spec()
    s, _ = start(sp, T0, "ann")
    s2, eff = step(sp, s, [ready("web1", T0 + 10, build=OLD),
                           NodeReport("web2", "failed", OLD, T0 + 10, "old breakage")],
                   OLD, T0 + 11)
    assert (s2, eff) == (s, [])


def test_canary_failed_reverts_it_and_records_why() -> None:
    sp = spec()
    s, _ = start(sp, T0, "ann")
    s, _ = step(sp, s, [ready("web1", T0 + 30)], OLD, T0 + 31)
    s, eff = step(sp, s, [failed("web2", T0 + 40)], OLD, T0 + 41)
    assert s.phase == "stopped"
    assert statuses(s) == {"web1": "reverted", "web2": "reverted"}
    assert eff[0] == Revert(("web1", "web2"), s.reason)
    assert isinstance(eff[1], History) and eff[1].action == "rollout-revert"
    assert eff[1].from_build == NEW and eff[1].to_build == OLD
    assert eff[1].why == "rollout 7: node web2 failed: cloud-init error: bad user-data"
    assert pins([(sp, s)]) == {}  # every node it touched follows the old build again
    assert not any(isinstance(e, MoveChannel) for e in eff)


def test_silent_past_the_deadline_reverts() -> None:
    sp = spec()
    s, _ = start(sp, T0, "ann")
    s, _ = step(sp, s, [ready("web1", T0 + 30)], OLD, T0 + 31)
    s2, eff = step(sp, s, [], OLD, T0 + 15 * MIN - 1)  # one second before: still waiting
    assert s2 == s and eff == []
    s, eff = step(sp, s, [], OLD, T0 + 15 * MIN)
    assert s.phase == "stopped"
    assert "node web2 failed: silent: no ready report within 15m of batch 0's start" in s.reason
    assert statuses(s) == {"web1": "reverted", "web2": "reverted"}


def test_node_that_never_boots_fails_at_the_deadline_of_its_batch() -> None:
    sp = spec(nodes=3, canary=1, batch="1")
    s, _ = start(sp, T0, "ann")
    s, eff = step(sp, s, [ready("web1", T0 + 5)], OLD, T0 + 6)
    assert eff == [StartBatch(1, ("web2",))]
    # web2's deadline counts from its batch's start (T0 + 6), not the rollout's.
    s2, _ = step(sp, s, [], OLD, T0 + 15 * MIN + 5)
    assert s2.phase == "running"
    s, _ = step(sp, s, [], OLD, T0 + 6 + 15 * MIN)
    assert s.phase == "stopped" and "node web2 failed: silent" in s.reason
    assert "web3" not in s.nodes  # never touched
    assert statuses(s) == {"web1": "reverted", "web2": "reverted"}


def test_max_failed_above_one_lets_single_failures_go_back_alone() -> None:
    sp = spec(nodes=5, canary=2, batch="3", max_failed=2)
    s, _ = start(sp, T0, "ann")
    s, eff = step(sp, s, [failed("web1", T0 + 10)], OLD, T0 + 11)
    assert s.phase == "running" and eff == [Revert(("web1",), "node web1 failed: "
                                                   "cloud-init error: bad user-data")]
    assert set(pins([(sp, s)])) == {"web2"}  # web1 follows the old build again
    s, eff = step(sp, s, [failed("web1", T0 + 10), ready("web2", T0 + 20)], OLD, T0 + 21)
    assert eff == [StartBatch(1, ("web3", "web4", "web5"))]
    reps = [failed("web1", T0 + 10), ready("web2", T0 + 20), ready("web3", T0 + 30),
            ready("web4", T0 + 31), ready("web5", T0 + 32)]
    s, eff = step(sp, s, reps, OLD, T0 + 33)
    assert s.phase == "done" and isinstance(eff[0], MoveChannel)
    assert "4 of 5 nodes ready" in eff[0].why and "1 failed" in eff[0].why
    # The second failure stops it, when there is one.
    s, _ = start(sp, T0, "ann")
    s, _ = step(sp, s, [failed("web1", T0 + 10), failed("web2", T0 + 11, "disk")], OLD,
                T0 + 12)
    assert s.phase == "stopped"
    assert s.reason == ("rollout 7: node web1 failed: cloud-init error: bad user-data; "
                        "node web2 failed: disk")


def test_a_ready_node_that_fails_later_counts() -> None:
    sp = spec()
    s, _ = start(sp, T0, "ann")
    s, _ = step(sp, s, [ready("web1", T0 + 10)], OLD, T0 + 11)
    s, _ = step(sp, s, [ready("web1", T0 + 10), failed("web1", T0 + 20)], OLD, T0 + 21)
    assert s.phase == "stopped"


def test_pause_holds_batches_and_deadlines_resume_restarts_the_clock() -> None:
    sp = spec()
    s, _ = start(sp, T0, "ann")
    s = pause(sp, s, T0 + 5)
    assert s.phase == "paused" and deadline(sp, s) is None
    assert set(pins([(sp, s)])) == {"web1", "web2"}  # paused keeps what it started
    reps = [ready("web1", T0 + 10), ready("web2", T0 + 11)]
    s, eff = step(sp, s, reps, OLD, T0 + 60 * MIN)  # long past the deadline
    assert s.phase == "paused" and s.batch == 0 and eff == []
    assert statuses(s) == {"web1": "ready", "web2": "ready"}
    with pytest.raises(ValueError):
        pause(sp, s, T0)
    s = resume(sp, s, T0 + 61 * MIN)
    assert s.batch_started == T0 + 61 * MIN
    s, eff = step(sp, s, reps, OLD, T0 + 61 * MIN)
    assert eff == [StartBatch(1, ("web3", "web4"))]
    with pytest.raises(ValueError):
        resume(sp, s, T0)


def test_a_failure_while_paused_still_stops() -> None:
    sp = spec()
    s, _ = start(sp, T0, "ann")
    s = pause(sp, s, T0 + 1)
    s, _ = step(sp, s, [failed("web1", T0 + 2)], OLD, T0 + 3)
    assert s.phase == "stopped"


def test_resume_restarts_the_deadline_for_silent_nodes() -> None:
    sp = spec()
    s, _ = start(sp, T0, "ann")
    s = pause(sp, s, T0 + 14 * MIN)
    s = resume(sp, s, T0 + 20 * MIN)
    s2, _ = step(sp, s, [], OLD, T0 + 30 * MIN)
    assert s2.phase == "running"
    s2, _ = step(sp, s, [], OLD, T0 + 35 * MIN)
    assert s2.phase == "stopped"


def test_abort_reverts_what_it_touched() -> None:
    sp = spec()
    s, _ = start(sp, T0, "ann")
    s, _ = step(sp, s, [ready("web1", T0 + 1), ready("web2", T0 + 2)], OLD, T0 + 3)
    s, eff = abort(sp, s, T0 + 4, "bob@cli", "wrong build")
    assert s.phase == "aborted" and s.reason == "rollout 7 aborted by bob@cli: wrong build"
    assert eff[0] == Revert(("web1", "web2", "web3", "web4"), s.reason)
    assert isinstance(eff[1], History) and eff[1].action == "rollout-abort"
    assert pins([(sp, s)]) == {}
    with pytest.raises(ValueError):
        abort(sp, s, T0 + 5, "bob")


def test_channel_moved_by_hand_aborts() -> None:
    sp = spec()
    s, _ = start(sp, T0, "ann")
    s, eff = step(sp, s, [], "kvm/2027.01", T0 + 1)
    assert s.phase == "aborted" and "moved to kvm/2027.01 outside the rollout" in s.reason
    assert isinstance(eff[0], Revert)


def test_step_is_idempotent() -> None:
    sp = spec()
    s, _ = start(sp, T0, "ann")
    reps = [ready("web1", T0 + 1), ready("web2", T0 + 2)]
    s1, eff1 = step(sp, s, reps, OLD, T0 + 3)
    assert eff1
    s2, eff2 = step(sp, s1, reps, OLD, T0 + 3)
    assert s2 == s1 and eff2 == []


def test_restart_mid_way_resumes_from_the_stored_state() -> None:
    sp = spec()
    s, _ = start(sp, T0, "ann")
    s, _ = step(sp, s, [ready("web1", T0 + 1), ready("web2", T0 + 2)], OLD, T0 + 3)
    # What state/rollouts.py stores and reads back after a restart.
    sp2 = RolloutSpec.from_json(sp.as_json())
    s2 = RolloutState.from_json(s.as_json())
    assert (sp2, s2) == (sp, s)
    reps = [ready("web1", T0 + 1), ready("web2", T0 + 2), ready("web3", T0 + 9),
            ready("web4", T0 + 9)]
    assert step(sp2, s2, reps, OLD, T0 + 10) == step(sp, s, reps, OLD, T0 + 10)
    _, eff = step(sp2, s2, reps, OLD, T0 + 10)
    assert eff == [StartBatch(2, ("web5",))]
