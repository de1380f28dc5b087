"""QEMU guests in the lab: a tap on br0 each, SeaBIOS/iPXE, OVMF or AAVMF, TCG only.

:class:`QemuGuest` is the handle of one QEMU process (its serial console goes to a file);
:class:`GuestsMixin` adds taps and :meth:`~GuestsMixin.start_qemu` to the lab.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import time
import uuid as uuid_mod
from collections.abc import Sequence
from pathlib import Path

from netbootd.lab.base import BRIDGE, LabError, _ip, _stop_process, _valid_mac
from netbootd.lab.firmware import (
    AAVMF_CODE,
    AAVMF_VARS,
    OVMF_DIR,
    QEMU,
    QEMU_AARCH64,
    SB_OVMF,
    Firmware,
    ovmf_files,
    secure_boot_ovmf_files,
)
from netbootd.lab.namespaces import LabNetwork


class QemuGuest:
    """A QEMU process started by :meth:`Lab.start_qemu`; its serial console goes to a file."""

    def __init__(
        self,
        name: str,
        proc: subprocess.Popen[bytes],
        serial_log: Path,
        qemu_log: Path,
        tap: str,
        mac: str,
        uuid: str | None,
        started: float,
    ) -> None:
        self.name = name
        self.proc = proc
        self.serial_log = serial_log
        self.qemu_log = qemu_log
        self.tap = tap
        self.mac = mac
        self.uuid = uuid
        self.started = started

    @property
    def pid(self) -> int:
        """PID of the QEMU process (``ip netns exec`` execs into it)."""
        return self.proc.pid

    def running(self) -> bool:
        """True while QEMU has not exited."""
        return self.proc.poll() is None

    def wait(self, timeout: float) -> int:
        """Wait for QEMU to exit; its exit status. Raises ``subprocess.TimeoutExpired``."""
        return self.proc.wait(timeout=timeout)

    def kill(self) -> None:
        """End QEMU (SIGTERM, then SIGKILL) and reap it."""
        _stop_process(self.proc)

    def serial_text(self) -> str:
        """Everything the guest has written to its serial console so far."""
        try:
            return self.serial_log.read_bytes().decode("utf-8", "replace")
        except FileNotFoundError:
            return ""

    def qemu_output(self) -> str:
        """QEMU's own stdout/stderr (errors about devices, firmware, taps)."""
        try:
            return self.qemu_log.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def wait_for_serial(
        self, pattern: str | re.Pattern[str], timeout: float, poll: float = 0.2
    ) -> re.Match[str]:
        """Wait until the serial console matches ``pattern``; the match.

        Raises ``TimeoutError`` (with the console's tail) on timeout, or ``LabError`` if QEMU
        exits before the pattern appears.
        """
        rx = re.compile(pattern) if isinstance(pattern, str) else pattern
        deadline = time.monotonic() + timeout
        while True:
            text = self.serial_text()
            m = rx.search(text)
            if m:
                return m
            if not self.running():
                text = self.serial_text()
                m = rx.search(text)
                if m:
                    return m
                raise LabError(
                    f"guest {self.name} exited (status {self.proc.returncode}) before "
                    f"{rx.pattern!r} appeared; qemu said: {self.qemu_output()[-500:]!r}; "
                    f"console tail: {text[-1500:]!r}"
                )
            if time.monotonic() >= deadline:
                raise TimeoutError(
                    f"guest {self.name}: {rx.pattern!r} not seen within {timeout:.0f} s; "
                    f"console tail: {text[-1500:]!r}"
                )
            time.sleep(poll)



class GuestsMixin(LabNetwork):
    """Taps on br0 and QEMU guests on them."""

    def add_tap(self, name: str, bridge: str = BRIDGE) -> str:
        """Create tap ``name`` in the lab namespace, attached to ``bridge`` and up; its name."""
        if not re.fullmatch(r"[A-Za-z0-9_.-]{1,15}", name):
            raise LabError(f"bad tap name {name!r}: 1-15 of [A-Za-z0-9_.-]")
        if name in self._taps:
            raise LabError(f"tap {name} exists already in this lab")
        _ip("-n", self.netns, "tuntap", "add", "dev", name, "mode", "tap")
        self._taps.append(name)
        _ip("-n", self.netns, "link", "set", name, "master", bridge, "up")
        return name

    def start_qemu(
        self,
        name: str,
        *,
        firmware: Firmware,
        mac: str,
        uuid: str | None = None,
        nic_model: str = "virtio-net-pci",
        stock_efi_pxe: bool = True,
        disk: Path | None = None,
        kernel: Path | None = None,
        initrd: Path | None = None,
        append: str | None = None,
        memory_mb: int = 512,
        boot_order: str = "n",
        extra_args: Sequence[str] = (),
        fw_cfg: Sequence[tuple[str, str]] = (),
        secure_boot: bool = False,
        net_then_disk: bool = False,
        bridge: str = BRIDGE,
        reboot_after_s: int | None = None,
    ) -> QemuGuest:
        """Boot a QEMU guest (TCG) on br0 through a new tap; serial console to a log file.

        BIOS: SeaBIOS with QEMU's iPXE NIC ROM. UEFI: OVMF (pflash code + a private copy of
        the vars); with ``stock_efi_pxe`` the NIC gets an empty ``romfile=`` so OVMF's own
        EDK2 PXE client runs instead of iPXE (OVMF has no e1000 driver: use virtio-net-pci).
        AAVMF: ``qemu-system-aarch64 -M virt -cpu cortex-a72`` with AAVMF (code + a private
        copy of the vars) and its own EDK2 PXE client (QEMU has no arm64 NIC ROM: ``romfile=``).
        ``kernel``/``initrd``/``append`` boot a kernel directly instead of from the network.
        ``disk`` is attached as a virtio disk (qcow2 by suffix, raw otherwise).
        ``fw_cfg`` adds ``-fw_cfg name=NAME,string=VALUE`` items (e.g. ``OVMF_HTTP_BOOT_ONLY``).
        ``secure_boot`` (UEFI): OVMF's Secure Boot build with Microsoft's keys enrolled and
        Secure Boot on (q35 with SMM, secure pflash). ``net_then_disk``: boot order by
        ``bootindex``, which OVMF follows: the NIC first, then ``disk``. ``bridge``: the lab
        bridge the tap joins (a lab with more than one segment). ``reboot_after_s``: when no
        boot device worked, SeaBIOS reboots after that many seconds and QEMU lets it (the
        default, None, makes a reboot end QEMU), so a failed network boot is retried.
        """
        if not re.fullmatch(r"[A-Za-z0-9_-]{1,32}", name):
            raise LabError(f"bad guest name {name!r}: 1-32 of [A-Za-z0-9_-]")
        if any(g.name == name for g in self.guests):
            raise LabError(f"guest {name} exists already in this lab")
        if firmware not in ("bios", "uefi", "aavmf"):
            raise LabError(f"firmware must be 'bios', 'uefi' or 'aavmf', not {firmware!r}")
        mac = _valid_mac(mac)
        if uuid is not None:
            uuid = str(uuid_mod.UUID(uuid))
        tap = self.add_tap(f"t{len(self.guests)}-{name}"[:15], bridge)
        serial_log = self.tmpdir / f"{name}.serial.log"
        qemu_log = self.tmpdir / f"{name}.qemu.log"
        args: list[str] = [
            QEMU_AARCH64 if firmware == "aavmf" else QEMU,
            "-accel",
            "tcg",
            "-m",
            str(memory_mb),
            "-nographic",
            *(["-no-reboot"] if reboot_after_s is None else
              ["-boot", f"reboot-timeout={reboot_after_s * 1000}"]),
            "-name",
            name,
            "-serial",
            f"file:{serial_log}",
            "-monitor",
            "none",
            "-netdev",
            f"tap,id=n0,ifname={tap},script=no,downscript=no",
        ]
        nic = f"{nic_model},netdev=n0,mac={mac}"
        if firmware == "uefi":
            files = ovmf_files()
            if files is None:
                raise LabError("OVMF not installed (apt-get install -y ovmf)")
            code, vars_template = files
            if secure_boot:
                sb = secure_boot_ovmf_files()
                if sb is None:
                    raise LabError(f"{OVMF_DIR}/{SB_OVMF[0]} and {SB_OVMF[1]} not found "
                                   "(package ovmf)")
                code, vars_template = sb
                args += ["-machine", "q35,smm=on", "-global",
                         "driver=cfi.pflash01,property=secure,value=on"]
            vars_copy = self.tmpdir / f"{name}.OVMF_VARS.fd"
            shutil.copyfile(vars_template, vars_copy)
            args += [
                "-drive",
                f"if=pflash,format=raw,unit=0,readonly=on,file={code}",
                "-drive",
                f"if=pflash,format=raw,unit=1,file={vars_copy}",
            ]
            if stock_efi_pxe:
                nic += ",romfile="
        elif firmware == "aavmf":
            if shutil.which(QEMU_AARCH64) is None or not AAVMF_CODE.is_file():
                raise LabError("ARM64 guests need qemu-system-arm and qemu-efi-aarch64")
            vars_copy = self.tmpdir / f"{name}.AAVMF_VARS.fd"
            shutil.copyfile(AAVMF_VARS, vars_copy)
            args += [
                "-M", "virt", "-cpu", "cortex-a72",
                "-drive", f"if=pflash,format=raw,unit=0,readonly=on,file={AAVMF_CODE}",
                "-drive", f"if=pflash,format=raw,unit=1,file={vars_copy}",
            ]
            nic += ",romfile="
        if net_then_disk:
            nic += ",bootindex=1"
        args += ["-device", nic]
        if kernel is not None:
            args += ["-kernel", str(kernel)]
            if initrd is not None:
                args += ["-initrd", str(initrd)]
            if append is not None:
                if "\n" in append:
                    raise LabError("kernel command line may not contain a newline")
                args += ["-append", append]
        else:
            args += ["-boot", f"order={boot_order}"]
        if uuid is not None:
            args += ["-smbios", f"type=1,uuid={uuid}"]
        if disk is not None:
            fmt = "qcow2" if disk.suffix == ".qcow2" else "raw"
            if net_then_disk:
                args += ["-drive", f"file={disk},format={fmt},if=none,id=disk0",
                         "-device", "virtio-blk-pci,drive=disk0,bootindex=2"]
            else:
                args += ["-drive", f"file={disk},format={fmt},if=virtio"]
        for key, value in fw_cfg:
            if not re.fullmatch(r"opt/[A-Za-z0-9_./-]{1,50}", key) or "," in value:
                raise LabError(f"bad fw_cfg item {key!r}={value!r}: name opt/..., no comma")
            args += ["-fw_cfg", f"name={key},string={value}"]
        args += list(extra_args)
        log = self._log_file(f"{name}.qemu.log")
        started = time.monotonic()
        proc = self.run(args, stdout=log, stderr=subprocess.STDOUT)
        guest = QemuGuest(name, proc, serial_log, qemu_log, tap, mac, uuid, started)
        self.guests.append(guest)
        return guest

