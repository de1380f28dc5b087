"""HTTP answers commit the queued boot events before they go out, one commit per loop turn."""

from __future__ import annotations

import asyncio
from pathlib import Path

from netbootd.state.events import StateDB
from netbootd.web.app import _CommitBarrier

MAC = "52:54:00:00:00:01"


async def test_answers_of_one_turn_share_one_commit_and_see_their_events(tmp_path: Path) -> None:
    db = StateDB(tmp_path / "state.sqlite3")
    db.defer_writes(lambda flush: None)  # only the barrier commits in this test
    flushes = 0
    real_flush = db.flush

    def counted() -> None:
        nonlocal flushes
        flushes += 1
        real_flush()

    db.flush = counted  # type: ignore[method-assign]
    barrier = _CommitBarrier()

    async def answer(i: int) -> list[str]:
        db.record(MAC, f"ipxe-script-{i}", float(i))
        await barrier.wait(db)
        with StateDB.open_readonly(tmp_path / "state.sqlite3") as other:
            return [e.kind for e in other.timeline(MAC)]

    seen = await asyncio.gather(*(answer(i) for i in range(5)))
    assert flushes == 1
    for i, kinds in enumerate(seen):
        assert f"ipxe-script-{i}" in kinds  # committed before the answer went out
    # Nothing queued: no commit, no wait.
    await barrier.wait(db)
    assert flushes == 1
    # A later turn commits again.
    assert "late" in (await answer_late(db, barrier, tmp_path))
    assert flushes == 2
    real_flush()
    db.close()


async def answer_late(db: StateDB, barrier: _CommitBarrier, tmp_path: Path) -> list[str]:
    db.record(MAC, "late", 9.0)
    await barrier.wait(db)
    with StateDB.open_readonly(tmp_path / "state.sqlite3") as other:
        return [e.kind for e in other.timeline(MAC)]
