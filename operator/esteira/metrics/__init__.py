"""Metric providers: where the rollout engine's evidence comes from."""
