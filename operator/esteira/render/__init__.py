"""Pure manifest builders: a ModelDeployment and its revisions in, Kubernetes objects out. No I/O."""

from esteira.render.inferenceservice import RenderContext, render_inference_service
from esteira.render.traffic import Arm, TrafficPlan

__all__ = ["Arm", "RenderContext", "TrafficPlan", "render_inference_service"]
