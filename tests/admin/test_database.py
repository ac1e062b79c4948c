"""The admin's state database on SQLite and on a real PostgreSQL: migrations applied once (from
an empty database and from a file made before migrations), one admin per SQLite file, the batch
store's upserts and numbering on both, PostgreSQL unreachable at start (the admin waits and says
why) and restarted mid-run (a 503, then the next call goes through; nothing acknowledged lost)."""

from __future__ import annotations

import sqlite3

import pytest

from llmcell.admin.database import Database, Migration, StateUnavailable
from llmcell.admin.main import open_state
from llmcell.admin.placement import ModelSpec
from llmcell.admin.store import ModelStore
from llmcell.batch.store import BatchStore
from llmcell.config.admin import AdminConfig
from llmcell.protocol.batch import BatchObject, FileObject
from tests.server.conftest import free_port

STEPS = [Migration(1, ("CREATE TABLE IF NOT EXISTS things (name TEXT PRIMARY KEY, "
                       "size {bigint}, data {blob})",)),
         Migration(2, ("ALTER TABLE things ADD COLUMN weight {real}",))]


def open_db(state: dict) -> Database:
    return Database.open(state.get("state_url") or state["state_path"])


def test_migrations_apply_once_in_order(state):
    db = open_db(state)
    assert db.migrate("things", STEPS[:1]) == [1]
    assert db.migrate("things", STEPS) == [2]  # a later version adds its step only
    assert db.migrate("things", STEPS) == []
    db.execute("INSERT INTO things (name, size, data, weight) VALUES (?, ?, ?, ?)",
               ("a", 5 << 40, b"\x00\xff", 0.5))
    assert db.execute("SELECT size, data, weight FROM things").fetchone()[0] == 5 << 40
    assert {"name", "size", "data", "weight"} <= db.columns("things")
    db.close()


def test_a_file_from_before_migrations_keeps_its_rows(tmp_path):
    path = tmp_path / "old.sqlite3"
    old = sqlite3.connect(path)
    old.executescript("""CREATE TABLE models (model TEXT PRIMARY KEY, model_path TEXT NOT NULL,
        checkpoint TEXT NOT NULL, replicas INTEGER NOT NULL, memory_bytes INTEGER NOT NULL,
        updated REAL NOT NULL);
        INSERT INTO models VALUES ('/sax/test/a', 'x.gguf', 'None', 2, 100, 0);""")
    old.close()
    store = ModelStore(path)
    assert store.all() == [ModelSpec("/sax/test/a", "x.gguf", "None", 2, 100)]
    assert store.db.execute("SELECT version FROM schema_migrations WHERE component = 'models'"
                            ).fetchall() == [(1,), (2,), (3,)]  # 2: autoscaling, 3: base


def test_a_second_admin_on_one_sqlite_file_is_refused(tmp_path):
    first = Database.open(tmp_path / "admin.sqlite3")
    with pytest.raises(ValueError, match="in use by another admin .*PostgreSQL URL"):
        Database.open(tmp_path / "admin.sqlite3")
    first.close()
    Database.open(tmp_path / "admin.sqlite3").close()  # free again once the first has gone


def test_the_batch_store_upserts_and_numbers_on_both(state):
    store = BatchStore(open_db(state))
    for i in range(3):
        store.add_file(FileObject(f"file-{i}", "t", f"in{i}.jsonl", "batch", 10, 100 + i, 2))
    store.add_file(FileObject("file-1", "t", "renamed.jsonl", "batch", 12, 101, 3))
    assert store.file("file-1").filename == "renamed.jsonl"
    page, more = store.files("t", None, None, 2)
    assert [f.id for f in page] == ["file-2", "file-1"] and more
    page, more = store.files("t", None, "file-1", 5)
    assert [f.id for f in page] == ["file-0"] and not more
    store.add_batch(BatchObject("batch-1", "t", "file-0", "/v1/chat/completions", "24h",
                                "validating", 100, 200))
    assert store.add_result("batch-1", 0, "a", True, {"x": 1}, tokens=7)
    assert not store.add_result("batch-1", 0, "a", False, {"x": 2})  # the first row stays
    assert store.add_result("batch-1", 1, "b", False, {"x": 3})
    assert store.done_lines("batch-1") == {0, 1} and store.tokens("batch-1") == 7
    assert list(store.results("batch-1", True)) == ['{"x": 1}']
    assert store.totals() == {"completed": 1, "failed": 1, "tokens": 7}


def test_an_unreachable_postgresql_is_waited_for_with_back_off(tmp_path, capsys):
    config = AdminConfig(state_url=f"postgresql://llmcell@127.0.0.1:{free_port()}/none")
    waits = []

    def sleep(seconds):
        waits.append(seconds)
        if len(waits) == 7:
            raise KeyboardInterrupt  # the test has seen enough
    with pytest.raises(KeyboardInterrupt):
        open_state(config, sleep)
    assert waits == [1, 2, 4, 8, 16, 30, 30]
    assert "unreachable" in capsys.readouterr().err


def test_a_postgresql_restart_mid_run_fails_one_call_and_loses_nothing(postgres):
    store = ModelStore(postgres.fresh_database())
    store.put(ModelSpec("/sax/test/a", "x.gguf", "None", 1, 10))  # acknowledged: committed
    postgres.stop()
    try:
        with pytest.raises(StateUnavailable, match="went away|unreachable"):
            store.all()
    finally:
        postgres.start()
    assert store.all() == [ModelSpec("/sax/test/a", "x.gguf", "None", 1, 10)]
