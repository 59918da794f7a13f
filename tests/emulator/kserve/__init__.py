"""KServe v0.20.0's own rules for InferenceServices, as pure functions over plain dicts.

``admission`` is the webhook pair (defaulting, validation) KServe installs; ``naming`` derives the
names of the objects KServe creates. The emulator runs the webhooks on every write, and the fake
KServe controller uses the names, so tests meet the same refusals and names a cluster gives.
"""
