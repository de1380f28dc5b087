"""docs/backup.md, step by step: a server with a channel, a node that booted and a first-boot
URL is stopped and archived with tar; its state directory is wiped and restored from the
archive; the restored server passes `check`, serves the channel's build, accepts the URL issued
before the backup and still has the node's timeline."""

from __future__ import annotations

import json
import shutil
import subprocess
import time
from pathlib import Path

from example_configs import (
    example_data,
    http_get,
    import_builds,
    netbootd,
    rendered_files,
    serving,
)
from netbootd.lab.demo import toml_dump
from netbootd.state.events import StateDB


def test_a_backup_made_as_documented_restores_to_a_working_server(tmp_path: Path) -> None:
    data = example_data("ubuntu-autoinstall", tmp_path, loopback=True)
    config = tmp_path / "netbootd.toml"
    config.write_text(toml_dump(data))
    import_builds(config, data, tmp_path)
    group = data["groups"]["ubuntu"]
    group["channel"] = "stable"
    del group["build"]
    config.write_text(toml_dump(data))
    netbootd("channel", "set", "--config", str(config), "stable", "ubuntu/24.04.1")
    mac = data["nodes"]["srv01"]["mac"]
    base = f"http://127.0.0.1:{data['http']['port']}"
    state_dir = tmp_path / "state"

    with serving(config):
        status, script = http_get(f"{base}/ipxe/node.ipxe?mac={mac.replace(':', '-')}&arch=7")
        assert status == 200 and b"ubuntu/24.04.1" in script
    files = rendered_files(config, mac, "efi64", time.time())
    seed = next(name for (channel, name) in files if name.endswith("/user-data"))
    with StateDB(state_dir / "state.sqlite3") as db:
        events_before = [e.kind for e in db.timeline(mac)]
    assert "ipxe-script" in events_before
    key = (state_dir / "firstboot.key").read_bytes()

    # Backup (the service is stopped), as docs/backup.md says.
    archive = tmp_path / "netbootd-state.tar.gz"
    subprocess.run(["tar", "-C", str(state_dir), "-czpf", str(archive), "."], check=True)
    # Disaster: the state directory (store included) is gone.
    shutil.rmtree(state_dir)
    state_dir.mkdir(mode=0o700)
    subprocess.run(["tar", "-C", str(state_dir), "-xzpf", str(archive)], check=True)

    assert (state_dir / "firstboot.key").stat().st_mode & 0o777 == 0o600
    checked = netbootd("check", "--json", "--config", str(config), check=False)
    assert json.loads(checked.stdout)["errors"] == [] and checked.returncode == 0
    with serving(config):
        status, body = http_get(seed)  # issued before the backup: same key, still valid
        assert status == 200 and b"autoinstall:" in body
        status, script = http_get(f"{base}/ipxe/node.ipxe?mac={mac.replace(':', '-')}&arch=7")
        assert status == 200 and b"ubuntu/24.04.1" in script  # via the restored channel
        kernel = next(line.split()[1] for line in script.decode().splitlines()
                      if line.startswith("kernel "))
        status, blob = http_get(kernel)
        assert status == 200 and blob[0x202:0x206] == b"HdrS"
    assert (state_dir / "firstboot.key").read_bytes() == key
    with StateDB(state_dir / "state.sqlite3") as db:
        events_after = [e.kind for e in db.timeline(mac)]
    assert events_after[:len(events_before)] == events_before
    assert len(events_after) > len(events_before)
