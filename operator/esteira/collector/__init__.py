"""Esteira's collector: inference records and ground truth in, per-revision quality out.

Records (CloudEvents in KServe's logger format) and labels are stored durably (SQLite on one machine,
PostgreSQL on a cluster), joined by request id, and turned into Prometheus metrics the rollout's accuracy
check reads. The operator's decisions land here too, as an audit trail that outlives Kubernetes Events.
"""
