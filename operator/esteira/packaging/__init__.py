"""Model packaging for TorchServe behind KServe, and the start-up of Esteira's model server.

Everything here imports without torch: the operator image has none, and the model server only needs it in
TorchServe's workers. The pure builders live in ``esteira.packaging.config``; ``esteira.packaging.archive``
runs ``torch-model-archiver``; ``esteira.packaging.entrypoint`` starts TorchServe inside the model server.
"""

from esteira.packaging.config import (
    DEFAULT_MODEL_DIR,
    ModelSpec,
    ServerSpec,
    config_properties,
    model_config_yaml,
    parse_properties,
)

__all__ = [
    "DEFAULT_MODEL_DIR",
    "ModelSpec",
    "ServerSpec",
    "config_properties",
    "model_config_yaml",
    "parse_properties",
]
