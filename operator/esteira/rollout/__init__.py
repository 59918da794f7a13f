"""Progressive delivery: the pure rollout engine, its checks and the evidence they read."""
