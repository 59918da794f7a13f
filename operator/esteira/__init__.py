"""Esteira: carries trained PyTorch models into production on Kubernetes and keeps them healthy there."""

__version__ = "0.1.0"

API_GROUP = "serving.esteira.io"
API_VERSION = "v1alpha1"
KIND = "ModelDeployment"
PLURAL = "modeldeployments"
