"""Model zoo definitions: a name -> constructor registry."""

from annt.models import mnist, resnet  # noqa: F401  (registers the built-in models)
from annt.models.registry import ModelInfo, create_model, list_models, model_info, register

__all__ = ["ModelInfo", "create_model", "list_models", "model_info", "register"]
