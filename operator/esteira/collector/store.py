"""Durable storage for records, labels, labelled predictions and the audit trail.

SQLite (a file, no set-up) for `esteira up` and small installs; PostgreSQL for clusters, where the collector
may restart on another node. Both behind one class: the SQL is shared; placeholders, the audit key, the staging
tables and how a batch is bulk-loaded (COPY, executemany) differ. Every write commits before the caller
acknowledges, so an acknowledged record survives a crash.
Calls are blocking; the web app runs them in a thread.
"""

from __future__ import annotations

import contextlib
import json
import sqlite3
import threading
from collections import Counter
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from esteira.collector.model import AuditEntry, Joined, Label, Record
from esteira.quality.scores import Answer, Pair, Tally, pair_up

_TABLES = """
CREATE TABLE IF NOT EXISTS records (
  namespace TEXT NOT NULL, deployment TEXT NOT NULL, revision TEXT NOT NULL, request_id TEXT NOT NULL,
  kind TEXT NOT NULL, at DOUBLE PRECISION NOT NULL, model TEXT NOT NULL, version TEXT NOT NULL,
  body TEXT NOT NULL, predictions TEXT NOT NULL,
  PRIMARY KEY (namespace, deployment, revision, request_id, kind));
CREATE INDEX IF NOT EXISTS records_by_request ON records (namespace, deployment, request_id);
CREATE INDEX IF NOT EXISTS records_by_time ON records (at);
CREATE TABLE IF NOT EXISTS labels (
  namespace TEXT NOT NULL, deployment TEXT NOT NULL, request_id TEXT NOT NULL, truth TEXT NOT NULL,
  at DOUBLE PRECISION NOT NULL, PRIMARY KEY (namespace, deployment, request_id));
CREATE INDEX IF NOT EXISTS labels_by_time ON labels (at);
CREATE TABLE IF NOT EXISTS joins (
  namespace TEXT NOT NULL, deployment TEXT NOT NULL, revision TEXT NOT NULL, request_id TEXT NOT NULL,
  idx INTEGER NOT NULL, predicted TEXT NOT NULL, actual TEXT NOT NULL, correct INTEGER NOT NULL,
  abs_error DOUBLE PRECISION, predicted_at DOUBLE PRECISION NOT NULL, joined_at DOUBLE PRECISION NOT NULL,
  PRIMARY KEY (namespace, deployment, revision, request_id, idx));
CREATE INDEX IF NOT EXISTS joins_by_time ON joins (namespace, deployment, joined_at);
"""
_AUDIT = {
    "sqlite": "CREATE TABLE IF NOT EXISTS audit (id INTEGER PRIMARY KEY AUTOINCREMENT, ",
    "postgresql": "CREATE TABLE IF NOT EXISTS audit (id BIGSERIAL PRIMARY KEY, ",
}
_AUDIT_COLUMNS = (
    "namespace TEXT NOT NULL, deployment TEXT NOT NULL, at DOUBLE PRECISION NOT NULL, reason TEXT NOT NULL, "
    "message TEXT NOT NULL, warning INTEGER NOT NULL, actor TEXT NOT NULL, details TEXT NOT NULL, entry_id TEXT);"
    "CREATE INDEX IF NOT EXISTS audit_by_deployment ON audit (namespace, deployment, at);"
)
# The sender's entry id, unique where given (NULLs never conflict), so a resent entry is stored once. Audit
# tables created before it get the column when the collector opens them; the column is looked up first, as an
# ALTER TABLE locks the table even when it has nothing to do.
_AUDIT_COLUMN_NAMES = {
    "sqlite": "SELECT name FROM pragma_table_info('audit')",
    "postgresql": "SELECT column_name FROM information_schema.columns WHERE table_schema = current_schema() "
    "AND table_name = 'audit'",
}
_AUDIT_ENTRY_ID = "ALTER TABLE audit ADD COLUMN entry_id TEXT"
_AUDIT_ENTRY_INDEX = "CREATE UNIQUE INDEX IF NOT EXISTS audit_by_entry ON audit (entry_id)"
# Held by each PostgreSQL transaction that joins (one key for all): a record and its label stored by two collector
# processes at once (a rolling update) each looked for the other before it was committed, and never joined.
# SQLite's BEGIN IMMEDIATE already lets one writer at a time.
_JOINING_LOCK = 0x6573746569726131
# Where a batch of records, labels or joins is bulk-loaded before one INSERT ... SELECT (private to the connection).
_STAGING = {
    "sqlite": "CREATE TEMP TABLE IF NOT EXISTS staged_{0} AS SELECT * FROM {0} WHERE false",
    "postgresql": "CREATE TEMP TABLE IF NOT EXISTS staged_{0} (LIKE {0}) ON COMMIT DELETE ROWS",
}


def _answer(text: str) -> Answer:
    value = json.loads(text)
    return value if isinstance(value, str) else float(value)


class StoreUnavailable(Exception):
    """The database failed a transaction (unreachable, restarted, locked, full): the caller answers 503 and its
    sender retries; every write is idempotent (audit entries where the sender gives them an id), and the next
    transaction reconnects."""


class StoreRefused(Exception):
    """The database refused a value it was given (a data error): sending the same call again would fail the same
    way, so it is the caller's error, never StoreUnavailable."""


class Store:
    """One database connection, serialised by a lock (the collector's writes are small and short).

    A connection the database dropped (a restart, a failover) is replaced at the next transaction, so the
    collector recovers with the database instead of failing every call until it is restarted.
    """

    def __init__(self, url: str) -> None:
        self.url = url
        self._lock = threading.Lock()
        self._conn: Any = None
        if url.startswith(("postgresql://", "postgres://")):
            import psycopg  # the cluster's database; imported only when used

            self.dialect = "postgresql"
            self._errors: tuple[type[Exception], ...] = (psycopg.Error,)
            self._unavailable: tuple[type[Exception], ...] = (psycopg.OperationalError, psycopg.InterfaceError)
            self._refused: tuple[type[Exception], ...] = (psycopg.DataError,)
        elif url.startswith("sqlite:///"):
            self.dialect = "sqlite"
            self._errors = (sqlite3.Error,)
            self._unavailable = (sqlite3.OperationalError,)  # locked, busy, read-only, full, I/O, cannot open
            self._refused = (sqlite3.DataError,)
        else:
            raise ValueError(f"database URL must start with sqlite:/// or postgresql://, got {url!r}")
        with self._transaction():
            pass  # connects and creates the tables now: a wrong URL or credentials fail at start

    # --- plumbing ----------------------------------------------------------------------------------------

    def _connect(self) -> Any:
        if self.dialect == "postgresql":
            import psycopg

            return psycopg.connect(self.url, autocommit=False)
        path = Path(self.url.removeprefix("sqlite:///"))
        path.parent.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=FULL")  # an acknowledged write survives a power cut too
        return conn

    def _schema(self) -> list[str]:
        """The tables (created where missing) and this connection's staging tables."""
        statements = (_TABLES + _AUDIT[self.dialect] + _AUDIT_COLUMNS).split(";")
        return [s for s in statements if s.strip()] + [
            _STAGING[self.dialect].format(t) for t in ("records", "labels", "joins")
        ]

    def _prepare(self) -> None:
        """A new connection's tables and staging tables, committed on their own: made inside the caller's
        transaction, a rollback of it (a statement that failed) took the staging tables with it, and every later
        write on that connection failed for want of them."""
        cur = self._conn.cursor()
        if self.dialect == "sqlite":
            cur.execute("BEGIN IMMEDIATE")
        for statement in self._schema():
            cur.execute(statement)
        self._add_audit_entry_id(cur)
        self._conn.commit() if self.dialect == "postgresql" else cur.execute("COMMIT")

    def _add_audit_entry_id(self, cur: Any) -> None:
        """The audit table's entry id column and its unique index, added to a table created without them."""
        if "entry_id" not in {row[0] for row in cur.execute(_AUDIT_COLUMN_NAMES[self.dialect]).fetchall()}:
            cur.execute(_AUDIT_ENTRY_ID)
        cur.execute(_AUDIT_ENTRY_INDEX)

    def _recover(self) -> None:
        """After a failed transaction: roll back, or drop a connection that is gone so the next one reconnects."""
        try:
            self._conn.rollback() if self.dialect == "postgresql" else self._conn.execute("ROLLBACK")
        except Exception:
            with contextlib.suppress(Exception):
                self._conn.close()
            self._conn = None

    def _raise_for(self, error: BaseException | None) -> None:
        """Raise a database error as the caller must take it: unavailable (send the call again) or refused (the
        data it sent); any other error is a bug and left as it is."""
        if isinstance(error, self._unavailable):
            raise StoreUnavailable(str(error).strip()) from error
        if isinstance(error, self._refused):
            raise StoreRefused(str(error).strip()) from error

    def _sql(self, statement: str) -> str:
        return statement.replace("?", "%s") if self.dialect == "postgresql" else statement

    class _Tx:
        def __init__(self, store: Store) -> None:
            self.store = store

        def __enter__(self) -> Any:
            store = self.store
            store._lock.acquire()
            try:
                if store._conn is None:
                    store._conn = store._connect()
                    store._prepare()
                self.cur = store._conn.cursor()
                if store.dialect == "sqlite":
                    self.cur.execute("BEGIN IMMEDIATE")
            except BaseException as exc:
                if store._conn is not None:
                    store._recover()
                store._lock.release()
                store._raise_for(exc)
                raise
            return self

        def execute(self, statement: str, params: Sequence[Any] = ()) -> Any:
            self.cur.execute(self.store._sql(statement), tuple(params))
            return self.cur

        def load(self, table: str, rows: Sequence[Sequence[Any]]) -> None:
            """Bulk-load rows (at least one): COPY on PostgreSQL, one prepared statement per row on SQLite."""
            if self.store.dialect == "postgresql":
                with self.cur.copy(f"COPY {table} FROM STDIN") as copy:
                    for row in rows:
                        copy.write_row(row)
            else:
                self.cur.executemany(f"INSERT INTO {table} VALUES ({', '.join('?' * len(rows[0]))})", rows)

        def __exit__(self, kind: object, error: BaseException | None, trace: object) -> None:
            store = self.store
            try:
                if error is None:
                    store._conn.commit() if store.dialect == "postgresql" else self.cur.execute("COMMIT")
                    return
                store._recover()
            except store._errors as failure:  # the commit itself failed
                store._recover()
                store._raise_for(failure)
                raise
            finally:
                store._lock.release()
            store._raise_for(error)

    def _transaction(self) -> Store._Tx:
        return Store._Tx(self)

    def close(self) -> None:
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None

    # --- writes ------------------------------------------------------------------------------------------

    def add_records(
        self, records: Iterable[Record], now: float
    ) -> tuple[int, list[Joined], list[tuple[str, str, str]]]:
        """Store records (a record seen before is ignored); returns how many were new, the new joins, and the
        (namespace, deployment, revision) of each new answer whose label, stored first, does not fit it (one
        truth for two instances): such an answer is never joined, and is counted there instead."""
        unique: dict[tuple[str, ...], Record] = {}
        for r in records:
            unique.setdefault((r.namespace, r.deployment, r.revision, r.request_id, r.kind), r)
        joined, unfit = [], []
        with self._transaction() as tx:
            self._join_alone(tx)
            inserted = self._insert_new(tx, "records", "namespace, deployment, revision, request_id, kind",
                                        [(r.namespace, r.deployment, r.revision, r.request_id, r.kind, r.at, r.model,
                                          r.version, r.body, json.dumps(list(r.predictions)))
                                         for r in unique.values()])  # fmt: skip
            truths = {
                (namespace, deployment, request_id): truth
                for namespace, deployment, request_id, truth in tx.execute(
                    "SELECT l.namespace, l.deployment, l.request_id, l.truth FROM labels l JOIN staged_records s "
                    "ON l.namespace = s.namespace AND l.deployment = s.deployment AND l.request_id = s.request_id "
                    "WHERE s.kind = 'response'"
                ).fetchall()
            }
            for key, r in unique.items():
                truth = truths.get((r.namespace, r.deployment, r.request_id))
                if truth is not None and r.kind == "response" and r.predictions and key in inserted:
                    pairs = _joined(r.namespace, r.deployment, r.revision, r.request_id, list(r.predictions),
                                    json.loads(truth), r.at, now)  # fmt: skip
                    joined += pairs
                    if not pairs:
                        unfit.append((r.namespace, r.deployment, r.revision))
            joined = self._add_joins(tx, joined)
        return len(inserted), joined, unfit

    def add_labels(
        self, labels: Iterable[Label], now: float
    ) -> tuple[int, list[Joined], dict[tuple[str, str, str], str]]:
        """Store labels (the first truth for a request id wins); returns how many were new, the new joins, and why
        each label that does not fit the answer it is for was refused (kept, it would never join, and the first
        truth winning, a corrected one sent after it would be a duplicate).

        A join is timed `now`, as when the record comes second: joins are counted and purged by that time, and
        a label's own time (when its truth was observed) may be long before; the label keeps it as its time."""
        unique: dict[tuple[str, str, str], Label] = {}
        for label in labels:
            unique.setdefault(label.key, label)
        truths = {key: list(x.truth) if isinstance(x.truth, tuple) else x.truth for key, x in unique.items()}
        joined = []
        with self._transaction() as tx:
            self._join_alone(tx)
            self._stage(tx, "labels", [(*key, json.dumps(truths[key]), x.at) for key, x in unique.items()])
            answered: dict[tuple[str, ...], list[tuple[str, list[Answer], float]]] = {}
            for namespace, deployment, request_id, revision, predictions, at in tx.execute(
                "SELECT r.namespace, r.deployment, r.request_id, r.revision, r.predictions, r.at FROM records r "
                "JOIN staged_labels s ON r.namespace = s.namespace AND r.deployment = s.deployment "
                "AND r.request_id = s.request_id WHERE r.kind = 'response'"
            ).fetchall():
                key = (namespace, deployment, request_id)
                answered.setdefault(key, []).append((revision, json.loads(predictions), at))
            misfits = {key: why for key in unique if (why := _misfit(answered.get(key, []), truths[key]))}
            for key in misfits:
                tx.execute("DELETE FROM staged_labels WHERE namespace = ? AND deployment = ? AND request_id = ?", key)
            inserted = self._insert_staged(tx, "labels", "namespace, deployment, request_id")
            for key in unique:
                if key not in inserted:
                    continue
                for revision, predictions, at in answered.get(key, []):
                    joined += _joined(key[0], key[1], revision, key[2], predictions, truths[key], at, now)
            joined = self._add_joins(tx, joined)
        return len(inserted), joined, misfits

    def _insert_new(self, tx: Store._Tx, table: str, key: str, rows: list[tuple[Any, ...]]) -> set[tuple[Any, ...]]:
        """Add the rows that are not stored yet; returns their keys.

        Set-based, as a model server posts up to a thousand records at once: the rows are bulk-loaded into the
        table's staging copy (COPY on PostgreSQL), then one INSERT ... SELECT keeps the new ones. A statement
        a row cost PostgreSQL a round trip each and capped it near 2,000 rows/s.
        """
        self._stage(tx, table, rows)
        return self._insert_staged(tx, table, key)

    def _join_alone(self, tx: Store._Tx) -> None:
        """Wait for any other process's joining transaction to end (see `_JOINING_LOCK`)."""
        if self.dialect == "postgresql":
            tx.execute("SELECT pg_advisory_xact_lock(?)", (_JOINING_LOCK,))

    @staticmethod
    def _stage(tx: Store._Tx, table: str, rows: list[tuple[Any, ...]]) -> None:
        tx.execute(f"DELETE FROM staged_{table}")
        if rows:
            tx.load(f"staged_{table}", rows)

    @staticmethod
    def _insert_staged(tx: Store._Tx, table: str, key: str) -> set[tuple[Any, ...]]:
        return {
            tuple(row)
            for row in tx.execute(
                f"INSERT INTO {table} SELECT * FROM staged_{table} WHERE true ON CONFLICT DO NOTHING RETURNING {key}"
            ).fetchall()
        }

    def _add_joins(self, tx: Store._Tx, joined: list[Joined]) -> list[Joined]:
        """Store labelled predictions in bulk; returns those not stored before (each is counted once)."""
        if not joined:
            return []  # most record batches find no label yet: no round trip for them
        pairs = pairs_of(joined)
        inserted = self._insert_new(tx, "joins", "namespace, deployment, revision, request_id, idx",
                                    [(j.namespace, j.deployment, j.revision, j.request_id, j.index,
                                      json.dumps(j.predicted), json.dumps(j.actual), int(p.correct),
                                      p.absolute_error, j.predicted_at, j.joined_at)
                                     for j, p in zip(joined, pairs, strict=True)])  # fmt: skip
        return [j for j in joined if (j.namespace, j.deployment, j.revision, j.request_id, j.index) in inserted]

    def add_audit(self, entries: Iterable[AuditEntry]) -> int:
        """Store the entries not stored before (by entry id; entries without one always are); returns how many."""
        count = 0
        with self._transaction() as tx:
            for e in entries:
                cursor = tx.execute(
                    "INSERT INTO audit (namespace, deployment, at, reason, message, warning, actor, details, entry_id) "
                    "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING",
                    (e.namespace, e.deployment, e.at, e.reason, e.message, int(e.warning), e.actor,
                     json.dumps(e.details), e.entry_id),
                )  # fmt: skip
                count += cursor.rowcount
        return count

    def purge(self, before: float) -> None:
        """Retention: everything older than `before` goes (the audit trail is kept)."""
        with self._transaction() as tx:
            tx.execute("DELETE FROM records WHERE at < ?", (before,))
            tx.execute("DELETE FROM labels WHERE at < ?", (before,))
            tx.execute("DELETE FROM joins WHERE joined_at < ?", (before,))

    # --- reads -------------------------------------------------------------------------------------------

    def tallies(self, namespace: str, deployment: str, since: float) -> dict[str, Tally]:
        """Per revision: labelled predictions joined since `since`, what was right and the error sums."""
        with self._transaction() as tx:
            rows = tx.execute(
                "SELECT revision, COUNT(*), SUM(correct), COALESCE(SUM(abs_error), 0), "
                "COALESCE(SUM(abs_error * abs_error), 0) FROM joins "
                "WHERE namespace = ? AND deployment = ? AND joined_at >= ? GROUP BY revision",
                (namespace, deployment, since),
            ).fetchall()
        return {str(r[0]): Tally(int(r[1]), int(r[2] or 0), float(r[3]), float(r[4])) for r in rows}

    def confusion(self, since: float) -> dict[tuple[str, str, str], Counter[tuple[str, str]]]:
        """(namespace, deployment, revision) -> (predicted, actual) counts, for classifiers' per-class scores."""
        with self._transaction() as tx:
            rows = tx.execute(
                "SELECT namespace, deployment, revision, predicted, actual, COUNT(*) FROM joins "
                "WHERE joined_at >= ? AND abs_error IS NULL GROUP BY namespace, deployment, revision, predicted, actual",
                (since,),
            ).fetchall()
        out: dict[tuple[str, str, str], Counter[tuple[str, str]]] = {}
        for namespace, deployment, revision, predicted, actual, count in rows:
            key = (namespace, deployment, str(revision))
            out.setdefault(key, Counter())[Pair(_answer(predicted), _answer(actual)).classes] += int(count)
        return out

    def all_tallies(self, since: float) -> dict[tuple[str, str, str], tuple[Tally, bool]]:
        """(namespace, deployment, revision) -> its tally, and whether its answers are numbers (regression)."""
        with self._transaction() as tx:
            rows = tx.execute(
                "SELECT namespace, deployment, revision, COUNT(*), SUM(correct), COALESCE(SUM(abs_error), 0), "
                "COALESCE(SUM(abs_error * abs_error), 0), COUNT(abs_error) FROM joins WHERE joined_at >= ? "
                "GROUP BY namespace, deployment, revision",
                (since,),
            ).fetchall()
        return {
            (r[0], r[1], str(r[2])): (Tally(int(r[3]), int(r[4] or 0), float(r[5]), float(r[6])), int(r[7]) > 0)
            for r in rows
        }

    def labelled(self, namespace: str, deployment: str, since: float, until: float) -> list[dict[str, Any]]:
        """Labelled predictions made in [since, until) with their (redacted) requests: the retraining export."""
        with self._transaction() as tx:
            rows = tx.execute(
                "SELECT j.revision, j.request_id, j.idx, j.predicted, j.actual, j.predicted_at, j.joined_at, "
                "r.body FROM joins j LEFT JOIN records r ON r.namespace = j.namespace AND "
                "r.deployment = j.deployment AND r.revision = j.revision AND r.request_id = j.request_id "
                "AND r.kind = 'request' WHERE j.namespace = ? AND j.deployment = ? AND j.predicted_at >= ? "
                "AND j.predicted_at < ? ORDER BY j.predicted_at, j.request_id, j.idx",
                (namespace, deployment, since, until),
            ).fetchall()
        keys = ("revision", "request_id", "index", "predicted", "actual", "predicted_at", "joined_at", "request")
        return [dict(zip(keys, row, strict=True)) for row in rows]

    def audit(self, namespace: str | None, deployment: str, limit: int) -> list[dict[str, Any]]:
        query = (
            "SELECT namespace, deployment, at, reason, message, warning, actor, details, entry_id FROM audit "
            "WHERE deployment = ?"
        )
        params: list[Any] = [deployment]
        if namespace:
            query += " AND namespace = ?"
            params.append(namespace)
        with self._transaction() as tx:
            rows = tx.execute(query + " ORDER BY at, id LIMIT ?", (*params, limit)).fetchall()
        keys = ("namespace", "deployment", "at", "reason", "message", "warning", "actor", "details", "id")
        return [
            {**dict(zip(keys, row, strict=True)), "warning": bool(row[5]), "details": json.loads(row[7])}
            for row in rows
        ]


def _joined(
    namespace: str, deployment: str, revision: str, request_id: str, predicted: list[Answer], truth: Any,
    predicted_at: float, now: float,
) -> list[Joined]:  # fmt: skip
    """One answer's labelled predictions, instance by instance; none when the truth does not fit the answer."""
    try:
        pairs = pair_up(predicted, truth)
    except ValueError:
        return []
    return [Joined(namespace, deployment, revision, request_id, index, pair.predicted, pair.actual, predicted_at, now)
            for index, pair in enumerate(pairs)]  # fmt: skip


def _misfit(answers: list[tuple[str, list[Answer], float]], truth: Any) -> str | None:
    """Why `truth` does not fit the answers already stored for its request (None: it fits, or none is stored, or
    none has predictions to join: those are never joined)."""
    for _, predicted, _ in answers:
        if predicted:
            try:
                pair_up(predicted, truth)
            except ValueError as exc:
                return str(exc)
    return None


def pairs_of(joined: Iterable[Joined]) -> list[Pair]:
    return [Pair(j.predicted, j.actual) for j in joined]
