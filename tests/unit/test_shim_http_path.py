"""shim over UEFI HTTP Boot asks for <its folder>//grubx64.efi: that one empty component is
folded; everything else still goes through the containment function as sent."""

from __future__ import annotations

import pytest

from netbootd.web.image_routes import _SHIM_DOUBLE_SLASH


@pytest.mark.parametrize(("asked", "looked_up"), [
    ("grub//grubx64.efi", "grub/grubx64.efi"),      # what shim sends (measured, OVMF)
    ("grub/grubx64.efi", "grub/grubx64.efi"),
    ("//etc/passwd", "//etc/passwd"),               # still refused by split_client_path
    ("grub//a/b", "grub//a/b"),
    ("grub///x", "grub///x"),
])
def test_only_shims_double_slash_is_folded(asked: str, looked_up: str) -> None:
    assert _SHIM_DOUBLE_SLASH.sub("/", asked) == looked_up
