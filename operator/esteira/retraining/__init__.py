"""Closing the loop, pure: when to retrain (triggers, debounced and bounded) and whether a candidate may roll out."""
