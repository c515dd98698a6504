"""Deployment: client/server split of a compiled model, an HTTP service, batch and Dask runs.

The HTTP service (``qnn_sklearn.deployment.http_server``, extra ``serve``) and the Dask
scale-out (``qnn_sklearn.deployment.dask_inference``, extra ``distributed``) are imported from
their modules, so that this package needs neither FastAPI nor Dask.
"""

from .artifacts import ArtifactError, VersionMismatchError
from .bench import measure_throughput
from .executor import FHEBatchRunner, WorkerCrashedError
from .fhe_model import FHEModelClient, FHEModelDev, FHEModelServer
from .framing import FramingError
from .http_client import FHEHTTPClient, HTTPServiceError
from .served_model import DeployableEstimator, ServedModel

__all__ = [
    "ArtifactError",
    "DeployableEstimator",
    "FHEBatchRunner",
    "FHEHTTPClient",
    "FHEModelClient",
    "FHEModelDev",
    "FHEModelServer",
    "FramingError",
    "HTTPServiceError",
    "ServedModel",
    "VersionMismatchError",
    "WorkerCrashedError",
    "measure_throughput",
]
