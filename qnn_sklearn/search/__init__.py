"""Cost-aware model search: cross-validated accuracy against predicted FHE latency."""

from .model_search import FHEModelSearchCV

__all__ = ["FHEModelSearchCV"]
