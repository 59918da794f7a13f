"""Esteira's TorchServe handlers: the code that runs inside the model server pods (needs torch)."""
