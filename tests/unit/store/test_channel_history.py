"""The rollback rule: history replayed as a stack (store/channels.py), pure."""

import pytest

from netbootd.errors import NotFound
from netbootd.store.channels import HistoryEntry, rollback_stack, rollback_target


def h(*steps: tuple[str, str | None, str]) -> list[HistoryEntry]:
    return [HistoryEntry(i, "kvm", float(i), "t", action, frm, to, "")
            for i, (action, frm, to) in enumerate(steps, 1)]


def test_rollback_goes_back_one_set_at_a_time() -> None:
    hist = h(("set", None, "v1"), ("set", "v1", "v2"), ("set", "v2", "v3"))
    assert rollback_target("kvm", hist, None) == "v2"
    hist.append(HistoryEntry(4, "kvm", 4.0, "t", "rollback", "v3", "v2", ""))
    assert rollback_stack(hist) == ["v1"]
    assert rollback_target("kvm", hist, None) == "v1"


def test_rollback_to_an_older_build_pops_everything_above_it() -> None:
    hist = h(("set", None, "v1"), ("set", "v1", "v2"), ("set", "v2", "v3"),
             ("rollback", "v3", "v1"))
    assert rollback_stack(hist) == []
    with pytest.raises(NotFound, match="no earlier build"):
        rollback_target("kvm", hist, None)


def test_rollback_to_a_build_never_in_the_channel_behaves_like_a_set() -> None:
    hist = h(("set", None, "v1"), ("rollback", "v1", "v0"))
    assert rollback_stack(hist) == ["v1"]


def test_a_first_set_leaves_nothing_to_roll_back_to() -> None:
    with pytest.raises(NotFound, match="no earlier build"):
        rollback_target("kvm", h(("set", None, "v1")), None)
    with pytest.raises(NotFound, match="no history"):
        rollback_target("kvm", [], None)


def test_setting_the_same_build_again_is_not_a_step_back() -> None:
    hist = h(("set", None, "v1"), ("set", "v1", "v2"), ("set", "v2", "v2"))
    assert rollback_stack(hist) == ["v1"]
