"""A ModelDeployment on one machine, no cluster: TorchServe processes per revision behind a small router.

The rollout decisions come from the same pure engine as the operator (`esteira.rollout.engine`); this package
only starts processes, routes requests, reads metrics and prints what happens.
"""
