import os
from pathlib import Path

import pytest

from netbootd.errors import PathRefused
from netbootd.paths import contain


@pytest.fixture
def root(tmp_path: Path) -> Path:
    (tmp_path / "root" / "sub").mkdir(parents=True)
    (tmp_path / "root" / "sub" / "f").write_text("x")
    (tmp_path / "secret").write_text("s")
    os.symlink(tmp_path / "secret", tmp_path / "root" / "out")
    os.symlink("sub/f", tmp_path / "root" / "in")
    return tmp_path / "root"


def test_plain_and_leading_slash(root: Path) -> None:
    assert contain(root, "sub/f").read_text() == "x"
    assert contain(root, "/sub/f").read_text() == "x"
    assert contain(root, "in").read_text() == "x"


@pytest.mark.parametrize("bad", ["../secret", "sub/../../secret", "//etc/passwd", "sub\\f",
                                 "sub/f\x00", "", "a" * 300, "sub/./f", "out", "sub//f"])
def test_refused(root: Path, bad: str) -> None:
    with pytest.raises(PathRefused):
        contain(root, bad)
