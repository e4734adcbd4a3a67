"""Training with the original recipes, checkpoints and resume."""

from annt.train.recipes import Recipe, default_recipe, make_recipe
from annt.train.trainer import TrainResult, fit, train_model

__all__ = ["Recipe", "TrainResult", "default_recipe", "fit", "make_recipe", "train_model"]
