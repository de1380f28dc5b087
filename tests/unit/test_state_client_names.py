"""A discovered machine's DHCP host name and user class in StateDB (both backends), and a
database from before they were kept."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from netbootd.admin_json import record_json
from netbootd.core.identity import ClientIdentity
from netbootd.state.events import MIGRATIONS, StateDB
from pgserver import Backend

MAC = "52:54:00:00:00:0c"
HOSTILE = "<script>window.__pwned=1</script>"


def test_saw_stores_host_name_and_user_class_and_keeps_them(backend: Backend) -> None:
    with StateDB(backend.db("s.db")) as db:
        db.saw(ClientIdentity(mac=MAC, vendor_class="PXEClient", dhcp_hostname=HOSTILE,
                              user_class="iPXE"), 1.0)
        rec = db.node(MAC)
        assert rec is not None and rec.dhcp_hostname == HOSTILE and rec.user_class == "iPXE"
        # A later packet without the options (EDK2 sends no option 12) keeps what was known.
        db.saw(ClientIdentity(mac=MAC, vendor_class="PXEClient"), 2.0)
        rec = db.node(MAC)
        assert rec is not None and rec.dhcp_hostname == HOSTILE and rec.user_class == "iPXE"
        assert rec.last_seen == 2.0
        db.saw(ClientIdentity(mac=MAC, dhcp_hostname="renamed", user_class="other"), 3.0)
        [rec] = db.discovered()
        assert (rec.dhcp_hostname, rec.user_class) == ("renamed", "other")
        j = record_json(rec)
        assert j["dhcp_hostname"] == "renamed" and j["user_class"] == "other"
    with StateDB(backend.db("s.db"), readonly=True) as ro:  # another reader sees the same
        rec = ro.node(MAC)
        assert rec is not None and rec.dhcp_hostname == "renamed"


def _version_1_database(path: Path) -> None:
    old = sqlite3.connect(path)
    old.executescript(MIGRATIONS[0].ddl + """
        CREATE TABLE schema_version (component TEXT PRIMARY KEY, version INTEGER NOT NULL,
          updated REAL NOT NULL);
        INSERT INTO schema_version VALUES ('events', 1, 0.0);
        INSERT INTO nodes (mac, vendor_class, boot_count, first_seen, last_seen)
          VALUES ('52:54:00:00:00:0c', 'PXEClient', 2, 1.0, 2.0);
    """)
    old.commit()
    old.close()


def test_a_version_1_database_is_read_then_migrated(tmp_path: Path) -> None:
    path = tmp_path / "v1.db"
    _version_1_database(path)
    with StateDB.open_readonly(path) as ro:  # beside a server that has not upgraded it
        rec = ro.node(MAC)
        assert rec is not None and rec.dhcp_hostname is None and rec.boot_count == 2
    with StateDB(path) as db:
        db.saw(ClientIdentity(mac=MAC, dhcp_hostname="n1", user_class="iPXE"), 3.0)
        rec = db.node(MAC)
        assert rec is not None and (rec.dhcp_hostname, rec.user_class) == ("n1", "iPXE")
        assert rec.vendor_class == "PXEClient"
    conn = sqlite3.connect(path)
    assert conn.execute("SELECT version FROM schema_version WHERE component='events'"
                        ).fetchone() == (2,)
    conn.close()
