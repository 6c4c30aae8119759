"""Model registry: ``params.yaml`` names a model, the registry builds it."""

from training.models.base import Recommender, build_model, model_names, register

# Importing the modules registers the models.
from training.models import bpr, freedom, lightgcn  # noqa: E402,F401  isort: skip

__all__ = ["Recommender", "build_model", "model_names", "register"]
