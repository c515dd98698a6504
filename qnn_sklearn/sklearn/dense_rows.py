"""Rows as the network reads them: a dense float32 array, whatever sparse matrix came in."""

from __future__ import annotations

import warnings

import numpy as np
from scipy import sparse

DENSIFY_WARNING_BYTES = 2**28
"""Size (bytes, as float32) above which densifying a sparse X warns. The network reads every
entry anyway (a dense first layer; the integer model's client quantizes every feature), so a
sparse X is made dense, which costs memory only; a copy above 256 MiB is worth a warning on
the small machines these models train on."""


def dense_rows(X, estimator_name: str) -> np.ndarray:
    """``X`` (validated) as float32, a scipy sparse matrix made dense (with a warning above
    ``DENSIFY_WARNING_BYTES``)."""
    if sparse.issparse(X):
        n_bytes = 4 * X.shape[0] * X.shape[1]
        if n_bytes > DENSIFY_WARNING_BYTES:
            warnings.warn(
                f"X is sparse; {estimator_name} makes it dense ({n_bytes / 2**20:.0f} MiB as "
                "float32). Select or reduce features (e.g. fewer one-hot categories) to use "
                "less memory.",
                stacklevel=4,
            )
        X = X.toarray()
    return X.astype(np.float32)
