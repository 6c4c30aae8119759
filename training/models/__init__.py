"""Model registry: ``params.yaml`` names a model, the registry builds it."""

from training.models.base import ItemFeature, Recommender, build_model, model_names, register

# Importing the modules registers the models.
from training.models import bpr, freedom, lattice, lightgcn, vbpr  # noqa: E402,F401  isort: skip
from training.models import sasrec  # noqa: E402,F401  isort: skip  (sequential task)
from training.models import cm3, lirdrec, modality_alignment, sige  # noqa: E402,F401  isort: skip  (zoo part 2)

__all__ = ["ItemFeature", "Recommender", "build_model", "model_names", "register"]
