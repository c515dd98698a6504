"""Deployment: client/server split of a compiled model, an HTTP service, batch and Dask runs."""

from .artifacts import ArtifactError, VersionMismatchError
from .fhe_model import FHEModelClient, FHEModelDev, FHEModelServer

__all__ = [
    "ArtifactError",
    "FHEModelClient",
    "FHEModelDev",
    "FHEModelServer",
    "VersionMismatchError",
]
