"""Debian 12's cloud-init (22.4) NoCloud datasource code fetching its seed from a running
netbootd, with the kernel command line netbootd rendered (over loopback).

Its two classes are the two stages: ``DataSourceNoCloud`` is what the local stage tries
(file seeds only), ``DataSourceNoCloudNet`` what the network stage tries. With netbootd's
``ds=nocloud-net;s=<seed>`` the network class claims the seed in ``net`` mode, which the network
stage applies. The old ``ds=nocloud;s=<seed>`` makes the same fetch end in ``local`` mode,
which the network stage skips ("datasource ... in local mode"): the boot then had no
hostname, no phone-home and ended with DataSourceNone.
"""

from __future__ import annotations

import asyncio
import json
import os
from pathlib import Path
from typing import Any

import pytest
from debian_cloudinit import SYSTEM_PYTHON, cloudinit_path
from test_boot_report import server  # noqa: F401  (the fixture)
from test_firstboot_tokens import DB1, Server

# Runs under the system python3 with Debian's cloudinit on PYTHONPATH; cloud-init reads the
# kernel command line from DEBUG_PROC_CMDLINE when set (cloudinit.util.get_cmdline).
PROBE = """
import json, sys
from cloudinit import distros, helpers
from cloudinit.sources import DataSourceNoCloud as nc
tmp = sys.argv[1]
paths = helpers.Paths({"cloud_dir": tmp + "/cloud", "run_dir": tmp + "/run"})
sys_cfg = {"datasource": {"NoCloud": {"fs_label": None}}}  # no cidata disk probing here
distro = distros.fetch("debian")("debian", {}, paths)
out = {}
for cls in (nc.DataSourceNoCloud, nc.DataSourceNoCloudNet):
    ds = cls(sys_cfg, distro, paths)
    found = ds.get_data()
    ud = ds.userdata_raw if found else None
    out[cls.__name__] = {"found": found, "dsmode": ds.dsmode,
                         "metadata": ds.metadata if found else None,
                         "userdata": ud.decode() if isinstance(ud, bytes) else ud}
print(json.dumps(out, default=str))
"""


@pytest.fixture(scope="module")
def cloudinit() -> Path:
    return cloudinit_path()


async def probe(cloudinit: Path, cmdline: str, tmp: Path) -> dict[str, Any]:
    env = {**os.environ, "PYTHONPATH": str(cloudinit), "DEBUG_PROC_CMDLINE": cmdline}
    proc = await asyncio.create_subprocess_exec(
        SYSTEM_PYTHON, "-c", PROBE, str(tmp), env=env, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(proc.communicate(), timeout=120)
    assert proc.returncode == 0, err.decode()
    return dict(json.loads(out))


async def node_cmdline(server: Server) -> str:  # noqa: F811
    status, script = await server.get(f"{server.base}/ipxe/node.ipxe?mac={DB1}&arch=7")
    assert status == 200
    kernel = next(line for line in script.splitlines() if line.startswith("kernel "))
    return kernel.split(" ", 2)[2]  # the arguments after the kernel's URL


async def test_cloud_init_22_4_claims_netbootds_seed_in_network_mode(
        server: Server, cloudinit: Path, tmp_path: Path) -> None:  # noqa: F811
    cmdline = await node_cmdline(server)
    seed = next(w for w in cmdline.split() if w.startswith("ds="))
    assert seed.startswith("ds=nocloud-net;s=http://")
    # the seed URL as the node would use it, pointed at this test's listener
    local_seed = "ds=nocloud-net;s=" + server.local(seed.split(";s=", 1)[1])
    got = await probe(cloudinit, cmdline.replace(seed, local_seed), tmp_path / "new")
    assert got["DataSourceNoCloud"]["found"] is False  # the local stage: not its kind of seed
    net = got["DataSourceNoCloudNet"]
    assert net["found"] is True and net["dsmode"] == "net"
    assert net["metadata"]["local-hostname"] == "db1"
    assert net["metadata"]["instance-id"] == "db1-demo-2.0"
    assert net["userdata"].startswith("#cloud-config\n") and "phone_home:" in net["userdata"]
    fetched = [e.detail["file"] for e in server.service.state.timeline(DB1.replace("-", ":"))
               if e.kind == "firstboot"]
    assert fetched == ["meta-data", "user-data"]  # and vendor-data, which records nothing

    # the spelling netbootd used before: fetched just the same, but claimed for local mode
    old_seed = local_seed.replace("ds=nocloud-net;", "ds=nocloud;")
    old = await probe(cloudinit, cmdline.replace(seed, old_seed), tmp_path / "old")
    assert old["DataSourceNoCloudNet"]["found"] is True
    assert old["DataSourceNoCloudNet"]["dsmode"] == "local"
