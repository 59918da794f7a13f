"""Pure state transitions: revisions, conditions and the reconcile plan. Data in, data out, no I/O."""
