"""The store on SQLite and PostgreSQL with a batch as large as a model server posts: duplicates inside the batch
and from before, labels stored first and found for records anywhere in the batch, never across namespaces."""

from __future__ import annotations

from esteira.collector.model import Label, Record
from esteira.collector.store import Store


def response(request_id: str, namespace: str = "models", body: str = "{}") -> Record:
    return Record(namespace, "iris", "1", request_id, "response", 1.0, body, predictions=("setosa",))


def test_a_large_batch_stores_each_record_once_and_joins_every_labelled_one(database: str) -> None:
    store = Store(database)
    try:
        count = 1_207
        labelled = {f"r{i}" for i in range(0, count, 97)} | {f"r{count - 1}"}
        store.add_labels(Label("models", "iris", rid, "setosa", 0.5) for rid in labelled)
        # Another namespace's label for the same request id must not join.
        store.add_labels([Label("staging", "iris", "r1", "setosa", 0.5)])
        assert store.add_records([response("r0"), response("r1")], now=2.0)[0] == 2

        batch = [response(f"r{i}") for i in range(count)]
        batch.insert(300, response("r299", body='{"second": "copy"}'))  # the same record twice in one batch
        added, joined = store.add_records(batch, now=3.0)

        assert added == count - 2  # r0 and r1 were stored before; r299's second copy is a duplicate
        assert {j.request_id for j in joined} == labelled - {"r0"}
        assert all(j.predicted == j.actual == "setosa" for j in joined)
        assert store.tallies("models", "iris", since=0.0)["1"].labelled == len(labelled)
        assert store.add_records(batch, now=4.0) == (0, [])
    finally:
        store.close()
