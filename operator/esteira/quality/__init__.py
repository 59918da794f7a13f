"""Model quality from delayed labels: pairing answers with the truth, scores per revision, and the test that
tells a worse canary from a small sample. Pure: the collector and the rollout checks both call it.
"""
