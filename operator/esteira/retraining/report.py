"""Model cards and retraining runs as text, for `kubectl esteira` and `esteira status`: one wording in both."""

from __future__ import annotations

from typing import Any


def card_summary(card: dict[str, Any] | None) -> str:
    """'from 1.0.0, accuracy 0.97 (1.0.0: 0.91 on the same rows), data sha256:3f2a9c1d (150 rows), by ml-team',
    or '-' without a card."""
    if not card:
        return "-"
    parts = []
    if card.get("parentVersion"):
        parts.append(f"from {card['parentVersion']}")
    validation = card.get("validation")
    if validation:
        baseline = validation.get("baseline")
        against = f" ({baseline['version']}: {baseline['score']:.4g} on the same rows)" if baseline else ""
        parts.append(f"{validation['metric']} {validation['score']:.4g}{against}")
    data = card.get("trainingData")
    if data:
        parts.append(f"data {data['fingerprint'][:15]} ({data['size']} rows)")
    if card.get("owner"):
        parts.append(f"by {card['owner']}")
    return ", ".join(parts) or "-"


def _webhook(run: dict[str, Any]) -> str:
    """' webhook Pending (2 deliveries, next 2026-06-01T12:04:00Z)', or nothing for a run without one."""
    state = run.get("webhook")
    if not state:
        return ""
    tried = run.get("webhookAttempts") or 0
    detail = [f"{tried} deliveries"] if tried else []
    if state == "Pending" and run.get("webhookNextAt"):
        detail.append(f"next {run['webhookNextAt']}")
    return f" webhook {state}" + (f" ({', '.join(detail)})" if detail else "")


def retraining_lines(retraining: dict[str, Any] | None) -> list[str]:
    """The last runs, newest first: number, signal, outcome, the version it produced, where its webhook's event
    stands, and why."""
    runs = (retraining or {}).get("runs") or []
    if not runs:
        return []
    lines = [f"retraining (last trigger {retraining.get('lastTriggeredAt', '-') if retraining else '-'}):"]
    for run in runs:
        version = f" -> {run['version']}" if run.get("version") else ""
        why = run.get("message") or run.get("reason", "")
        job = f" [{run['job']}]" if run.get("job") else ""
        lines.append(f"  run {run['run']} {run['signal']} {run['outcome']}{version}{job}{_webhook(run)}: {why}")
    return lines
