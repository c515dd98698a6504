"""scikit-learn estimators around a sparse quantized MLP."""

from ..torch.network import MAX_BITWIDTH_BACKWARD_COMPATIBLE, SparseQuantNeuralNetwork
from .qnn import NeuralNetClassifier, NeuralNetRegressor

__all__ = [
    "MAX_BITWIDTH_BACKWARD_COMPATIBLE",
    "NeuralNetClassifier",
    "NeuralNetRegressor",
    "SparseQuantNeuralNetwork",
]
