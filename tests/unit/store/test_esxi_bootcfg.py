"""parse_boot_cfg: VMware's boot.cfg as installer ISOs of ESXi 6.7, 7.0 and 8.0 ship it.

The samples are written from the format the ESXi installation guide documents ("About the
boot.cfg file") and the layout of each release's installer ISO; they are not copies of VMware's
files.
"""

import pytest
from hypothesis import given
from hypothesis import strategies as st

from netbootd.errors import BuildError
from netbootd.store.esxi_bootcfg import parse_boot_cfg
from netbootd.store.manifest import EsxiBoot

ESXI8 = """\
bootstate=0
title=Loading ESXi installer
timeout=5
prefix=
kernel=/b.b00
kernelopt=runweasel cdromBoot
modules=/jumpstrt.gz --- /useropts.gz --- /features.gz --- /k.b00 --- /uc_intel.b00 --- \
/uc_amd.b00 --- /uc_hygon.b00 --- /procfs.b00 --- /vmx.v00 --- /vim.v00 --- /tpm.v00 --- \
/sb.v00 --- /s.v00 --- /atlantic.v00 --- /bcm_mpi3.v00 --- /imgdb.tgz --- /basemisc.tgz --- \
/resvibs.tgz --- /esxupdt.v00 --- /tools.t00 --- /loadesx.v00 --- /lsuv2_hp.v00
build=8.0.3-0.0.24022510
updated=0
"""

# ESXi 7.0: the same keys; the image payload still travels as imgpayld.tgz.
ESXI7 = """\
bootstate=0
title=Loading ESXi installer
timeout=5
prefix=
kernel=/b.b00
kernelopt=cdromBoot runweasel
modules=/jumpstrt.gz --- /useropts.gz --- /features.gz --- /k.b00 --- /procfs.b00 --- \
/uc_intel.b00 --- /uc_amd.b00 --- /uc_hygon.b00 --- /vmx.v00 --- /vim.v00 --- /sb.v00 --- \
/s.v00 --- /imgdb.tgz --- /imgpayld.tgz
build=7.0.3-0.20.19193900
updated=0
"""

# ESXi 6.7: tboot runs first and b.b00 is the first module.
ESXI67 = """\
bootstate=0
title=Loading ESXi installer
timeout=5
prefix=
kernel=/tboot.b00
kernelopt=runweasel
modules=/b.b00 --- /jumpstrt.gz --- /useropts.gz --- /features.gz --- /k.b00 --- /s.v00 \
--- /imgdb.tgz --- /imgpayld.tgz
build=
updated=0
"""


def test_esxi8_installer_boot_cfg() -> None:
    boot = parse_boot_cfg(ESXI8)
    assert boot.kernel == "b.b00"
    assert boot.kernelopt == "runweasel cdromBoot"
    assert boot.title == "Loading ESXi installer"
    assert boot.modules[:4] == ("jumpstrt.gz", "useropts.gz", "features.gz", "k.b00")
    assert boot.modules[-1] == "lsuv2_hp.v00" and len(boot.modules) == 22


def test_esxi7_and_67_installer_boot_cfg() -> None:
    assert parse_boot_cfg(ESXI7) == EsxiBoot(
        kernel="b.b00", kernelopt="cdromBoot runweasel", title="Loading ESXi installer",
        modules=("jumpstrt.gz", "useropts.gz", "features.gz", "k.b00", "procfs.b00",
                 "uc_intel.b00", "uc_amd.b00", "uc_hygon.b00", "vmx.v00", "vim.v00", "sb.v00",
                 "s.v00", "imgdb.tgz", "imgpayld.tgz"))
    old = parse_boot_cfg(ESXI67)
    assert old.kernel == "tboot.b00" and old.modules[0] == "b.b00"


def test_crlf_comments_case_and_unknown_keys() -> None:
    text = ("# edited on a Windows host\r\n\r\nTITLE=Custom ESXi\r\nnorts=1\r\n"
            "kernel=/B.B00\r\nkernelopt=\r\nmodules=/JUMPSTRT.GZ---/k.b00\r\n")
    boot = parse_boot_cfg(text)
    assert boot == EsxiBoot(kernel="b.b00", modules=("jumpstrt.gz", "k.b00"), kernelopt="",
                            title="Custom ESXi")


def test_kernelopt_keeps_its_equals_signs() -> None:
    text = ESXI8.replace("kernelopt=runweasel cdromBoot",
                         "kernelopt=ks=http://10.0.0.1/ks.cfg netdevice=vmnic0")
    assert parse_boot_cfg(text).kernelopt == "ks=http://10.0.0.1/ks.cfg netdevice=vmnic0"


@pytest.mark.parametrize(("text", "expected"), [
    ("modules=/k.b00\n", "kernel=: missing or empty"),
    ("kernel=\nmodules=/k.b00\n", "kernel=: missing or empty"),
    ("kernel=/b.b00\n", "modules=: missing or empty"),
    ("kernel=/b.b00\nmodules=\n", "modules=: missing or empty"),
    ("kernel=/b.b00\nmodules=/a.gz --- --- /k.b00\n", "modules= entry 2: empty file name"),
    ("kernel=/b.b00\nmodules=/a.gz /k.b00\n", "entry 1 '/a.gz /k.b00' has arguments"),
    ("kernel=/b.b00\nmodules=/k.b00\nkernelopt=a\rks=http://evil\n",
     "kernelopt= contains a control character"),
    ("kernel=/b.b00\nmodules=/k.b00\nkernelopt=a\x00b\n", "kernelopt= contains a control"),
    ("kernel=/../../etc/passwd\nmodules=/k.b00\n", "'/../../etc/passwd' is not an acceptable"),
    ("kernel=/b.b00\nmodules=/k.b00 --- /a b\n", "entry 2 '/a b' has arguments"),
    ("kernel=/b.b00\nkernel=/x.b00\nmodules=/k.b00\n", "line 2: kernel= given again"),
    ("kernel=/b.b00\nmodules=/k.b00\njust some words\n", "line 3: 'just some words' is not"),
    ("prefix=http://10.0.0.1/esxi\nkernel=b.b00\nmodules=k.b00\n",
     "prefix=: 'http://10.0.0.1/esxi': an installer ISO's boot.cfg has an empty prefix"),
])
def test_errors_say_what_is_wrong(text: str, expected: str) -> None:
    with pytest.raises(BuildError) as e:
        parse_boot_cfg(text, where="x.iso:/BOOT.CFG")
    assert str(e.value).startswith("x.iso:/BOOT.CFG: ")
    assert expected in str(e.value)


def test_every_problem_is_listed_at_once() -> None:
    with pytest.raises(BuildError) as e:
        parse_boot_cfg("title=x\nkernelopt=a\rb\ngarbage\n")
    text = str(e.value)
    for part in ("kernel=: missing", "modules=: missing", "control character", "line 3"):
        assert part in text, part


@given(st.text(max_size=400))
def test_any_text_parses_or_raises_build_error(text: str) -> None:
    try:
        boot = parse_boot_cfg(text)
    except BuildError:
        return
    assert boot.kernel and boot.modules
    assert all("\n" not in v and "\r" not in v for v in (boot.kernelopt, boot.title))
