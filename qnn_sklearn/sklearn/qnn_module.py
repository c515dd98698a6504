"""The public import path of the estimators' network, as DESIGN.md's API contract names it.

The network is a torch module and lives in :mod:`qnn_sklearn.torch.network`; scikit-learn users
reach it here, beside the estimators that wrap it.
"""

from ..torch.network import MAX_BITWIDTH_BACKWARD_COMPATIBLE, SparseQuantNeuralNetwork

__all__ = ["MAX_BITWIDTH_BACKWARD_COMPATIBLE", "SparseQuantNeuralNetwork"]
