"""The store on SQLite and PostgreSQL with a batch as large as a model server posts: duplicates inside the batch
and from before, labels stored first and found for records anywhere in the batch, never across namespaces; and a
database that drops the connection or is locked fails one call with StoreUnavailable, then the store recovers."""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path
from typing import Any

import pytest

from esteira.collector.model import AuditEntry, Label, Record
from esteira.collector.store import Store, StoreUnavailable
from tests.collector.conftest import drop_connections, fresh_postgres_database
from tests.support.waiting import eventually


def response(request_id: str, namespace: str = "models", body: str = "{}") -> Record:
    return Record(namespace, "iris", "1", request_id, "response", 1.0, body, predictions=("setosa",))


def test_a_large_batch_stores_each_record_once_and_joins_every_labelled_one(database: str) -> None:
    store = Store(database)
    try:
        count = 1_207
        labelled = {f"r{i}" for i in range(0, count, 97)} | {f"r{count - 1}"}
        store.add_labels((Label("models", "iris", rid, "setosa", 0.5) for rid in labelled), now=0.5)
        # Another namespace's label for the same request id must not join.
        store.add_labels([Label("staging", "iris", "r1", "setosa", 0.5)], now=0.5)
        assert store.add_records([response("r0"), response("r1")], now=2.0)[0] == 2

        batch = [response(f"r{i}") for i in range(count)]
        batch.insert(300, response("r299", body='{"second": "copy"}'))  # the same record twice in one batch
        added, joined, unfit = store.add_records(batch, now=3.0)

        assert added == count - 2  # r0 and r1 were stored before; r299's second copy is a duplicate
        assert {j.request_id for j in joined} == labelled - {"r0"}
        assert all(j.predicted == j.actual == "setosa" for j in joined)
        assert store.tallies("models", "iris", since=0.0)["1"].labelled == len(labelled)
        assert unfit == []
        assert store.add_records(batch, now=4.0) == (0, [], [])
    finally:
        store.close()


def test_a_large_label_batch_keeps_the_first_truth_and_joins_every_revision_that_answered(database: str) -> None:
    store = Store(database)
    try:
        count = 1_207
        store.add_records([response(f"r{i}") for i in range(count)], now=1.0)
        store.add_records([Record("models", "iris", "2", "r5", "response", 1.0, "{}", predictions=("setosa",))],
                          now=1.0)  # fmt: skip
        store.add_labels([Label("models", "iris", "r0", "virginica", 1.5)], now=1.5)

        labels = [Label("models", "iris", f"r{i}", "setosa", 2.0) for i in range(count)]
        labels.insert(10, Label("models", "iris", "r9", "virginica", 2.0))  # a second truth for r9 in the batch
        labels.append(Label("models", "iris", "unanswered", "setosa", 2.0))
        added, joined, misfits = store.add_labels(labels, now=2.0)

        assert added == count and not misfits  # every r but r0 (labelled before), plus "unanswered"
        assert len(joined) == count - 1 + 1  # r1..r1206 once, r5 a second time for revision 2
        assert sorted(j.revision for j in joined if j.request_id == "r5") == ["1", "2"]
        assert [j.actual for j in joined if j.request_id == "r9"] == ["setosa"]
        tallies = store.tallies("models", "iris", since=0.0)
        assert tallies["1"].labelled == count and tallies["1"].correct == count - 1  # r0's truth was virginica
        assert store.add_labels(labels, now=3.0) == (0, [], {})
    finally:
        store.close()


def test_a_first_transaction_that_fails_on_a_new_connection_leaves_it_able_to_write(database: str) -> None:
    """The staging tables outlive a rollback of the transaction that opened the connection."""
    store = Store(database)

    def failing() -> None:
        with store._transaction() as tx:
            tx.execute("SELECT 1")
            raise RuntimeError("a statement failed")

    try:
        store.close()  # the next transaction opens a new connection
        with pytest.raises(RuntimeError):
            failing()
        assert store.add_labels([Label("models", "iris", "r1", "setosa", 1.0)], now=1.0)[0] == 1
        assert store.add_records([response("r1")], now=2.0)[0] == 1
    finally:
        store.close()


def test_a_record_and_its_label_stored_at_once_by_two_collectors_join(
    postgres_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two collector processes (a rolling update) store a record and its label at the same moment: each looked
    for the other before it was committed, and the pair never joined, unless one waits for the other."""
    import psycopg

    database = fresh_postgres_database(postgres_url)
    first, second = Store(database), Store(database)
    inside, release = threading.Event(), threading.Event()
    add_joins = first._add_joins

    def held(tx: Any, joined: Any) -> Any:  # the record's transaction, after it looked for a label
        inside.set()
        release.wait(10)
        return add_joins(tx, joined)

    def second_waits(conn: Any) -> bool:
        return (
            conn.execute("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted").fetchone()[0] > 0
        )

    monkeypatch.setattr(first, "_add_joins", held)
    recording = threading.Thread(target=first.add_records, args=([response("r1")], 1.0))
    labelling = threading.Thread(target=second.add_labels, args=([Label("models", "iris", "r1", "setosa", 2.0)], 2.0))
    try:
        recording.start()
        eventually(inside.is_set, 10, "the record's transaction past its look for a label")
        labelling.start()
        with psycopg.connect(database, autocommit=True) as conn:
            eventually(lambda: not labelling.is_alive() or second_waits(conn), 10, "the label stored or waiting")
        release.set()
        recording.join(10)
        labelling.join(10)
        assert first.tallies("models", "iris", since=0.0)["1"].labelled == 1
    finally:
        release.set()
        first.close()
        second.close()


def decision(reason: str, entry_id: str | None) -> AuditEntry:
    return AuditEntry("models", "iris", reason, f"{reason} happened", 1.0, entry_id=entry_id)


def test_an_audit_entry_sent_again_is_stored_once(database: str) -> None:
    """A sender that never heard its post's answer sends it again: entries with an id are stored once, entries
    without one (an older sender) as often as they come."""
    store = Store(database)
    try:
        batch = [decision("Promoted", "e1"), decision("RolledBack", "e2"), decision("Started", None)]
        assert store.add_audit(batch) == 3
        assert store.add_audit(batch) == 1  # only the entry without an id, again
        assert store.add_audit([decision("Promoted", "e1"), decision("Promoted", "e3")]) == 1
        entries = store.audit("models", "iris", 100)
        assert [(e["reason"], e["id"]) for e in entries] == [
            ("Promoted", "e1"), ("RolledBack", "e2"), ("Started", None), ("Started", None), ("Promoted", "e3")
        ]  # fmt: skip
    finally:
        store.close()


OLD_AUDIT_TABLE = (
    "CREATE TABLE audit (id {key}, namespace TEXT NOT NULL, deployment TEXT NOT NULL, at DOUBLE PRECISION NOT NULL, "
    "reason TEXT NOT NULL, message TEXT NOT NULL, warning INTEGER NOT NULL, actor TEXT NOT NULL, details TEXT NOT NULL)"
)
OLD_ENTRY = "INSERT INTO audit (namespace, deployment, at, reason, message, warning, actor, details) VALUES " \
    "('models', 'iris', 0.5, 'Created', 'before the upgrade', 0, '', '{}')"  # fmt: skip


def test_an_audit_table_from_before_entry_ids_gets_them_and_keeps_its_entries(database: str) -> None:
    if database.startswith("sqlite"):
        with sqlite3.connect(database.removeprefix("sqlite:///")) as conn:
            conn.execute(OLD_AUDIT_TABLE.format(key="INTEGER PRIMARY KEY AUTOINCREMENT"))
            conn.execute(OLD_ENTRY)
    else:
        import psycopg

        with psycopg.connect(database, autocommit=True) as conn:
            conn.execute(OLD_AUDIT_TABLE.format(key="BIGSERIAL PRIMARY KEY"))
            conn.execute(OLD_ENTRY)
    for _ in range(2):  # a second start finds the column there
        store = Store(database)
        try:
            store.add_audit([decision("Promoted", "e1")])
            entries = store.audit("models", "iris", 100)
            assert [(e["reason"], e["id"]) for e in entries] == [("Created", None), ("Promoted", "e1")]
        finally:
            store.close()


def test_a_dropped_database_connection_fails_one_call_then_the_store_reconnects(postgres_url: str) -> None:
    database = fresh_postgres_database(postgres_url)
    store = Store(database)
    try:
        assert store.add_records([response("before")], now=1.0)[0] == 1
        drop_connections(postgres_url, database)

        with pytest.raises(StoreUnavailable):
            store.add_records([response("during")], now=2.0)
        assert store.add_records([response("during"), response("before")], now=3.0)[0] == 1
        store.add_labels([Label("models", "iris", rid, "setosa", 4.0) for rid in ("before", "during")], now=4.0)
        assert store.tallies("models", "iris", since=0.0)["1"].labelled == 2
    finally:
        store.close()


def test_a_sqlite_file_it_cannot_write_is_unavailable_not_a_crash(tmp_path: Path) -> None:
    store = Store(f"sqlite:///{tmp_path / 'collector.db'}")
    try:
        blocker = sqlite3.connect(tmp_path / "collector.db", timeout=0)
        blocker.execute("BEGIN IMMEDIATE")  # another writer holds the lock
        store._conn.execute("PRAGMA busy_timeout = 0")  # fail at once instead of after sqlite3's 5 s wait
        with pytest.raises(StoreUnavailable, match="locked"):
            store.add_records([response("r1")], now=1.0)
        blocker.rollback()
        assert store.add_records([response("r1")], now=2.0)[0] == 1
    finally:
        store.close()
