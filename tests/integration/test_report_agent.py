"""The node-side report program (render/report_agent.py) run for real under the system
python3, against a running netbootd: it waits for cloud-init, reads cloud-init's result and
POSTs to the report URL the served user-data carries.

This host has no cloud-init installed, which is one real case: ``cloud-init status --wait``
cannot run and there is no result, so the node is ``failed`` with that reason. The other
case runs in a private mount namespace whose /run holds a ``result.json`` in the form
cloud-init 22.4's ``cmd/main.py`` writes at the end of its final stage.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import socket

import pytest
from test_boot_report import MAC, report_url, server  # noqa: F401  (server: the fixture)
from test_firstboot_tokens import DB1, Server

from netbootd.render.report_agent import REPORT_SCRIPT

PYTHON = "/usr/bin/python3"


async def run(*argv: str) -> tuple[int, str]:
    proc = await asyncio.create_subprocess_exec(*argv, stdout=asyncio.subprocess.PIPE,
                                                stderr=asyncio.subprocess.STDOUT)
    out, _ = await asyncio.wait_for(proc.communicate(), timeout=120)
    return proc.returncode or 0, out.decode()


async def test_no_cloud_init_result_reports_failed(server: Server) -> None:  # noqa: F811
    if shutil.which("cloud-init"):
        pytest.skip("this host has cloud-init: its own result would be reported")
    url = server.local(await report_url(server, DB1))
    code, out = await run(PYTHON, "-c", REPORT_SCRIPT, url)
    assert code == 0 and "netbootd report: error sent" in out, out
    node = server.service.state.node(MAC)
    assert node is not None and node.state == "failed"
    (event,) = [e for e in server.service.state.timeline(MAC) if e.kind == "failed"]
    assert event.detail["status"] == "error"
    assert event.detail["errors"][0].startswith("no cloud-init result: ")
    assert event.detail["hostname"] == socket.gethostname()


@pytest.mark.needs_root
async def test_a_clean_cloud_init_result_reports_ready(server: Server) -> None:  # noqa: F811
    if shutil.which("unshare") is None:
        pytest.skip("unshare (util-linux) is needed for a private /run")
    url = server.local(await report_url(server, DB1))
    result = json.dumps({"v1": {"datasource": "DataSourceNoCloudNet [seed=...][dsmode=net]",
                                "errors": []}})
    script = ("mount -t tmpfs netbootd-test /run && mkdir /run/cloud-init && "
              f"printf '%s' '{result}' > /run/cloud-init/result.json && "
              f'exec {PYTHON} -c "$0" "$1"')
    code, out = await run("unshare", "-m", "--propagation", "private", "sh", "-c", script,
                          REPORT_SCRIPT, url)
    assert code == 0 and "netbootd report: done sent" in out, out
    node = server.service.state.node(MAC)
    assert node is not None and node.state == "ready"
    (event,) = [e for e in server.service.state.timeline(MAC) if e.kind == "ready"]
    assert event.detail["errors"] == [] and event.detail["status"] == "done"
