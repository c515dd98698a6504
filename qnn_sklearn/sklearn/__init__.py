"""scikit-learn estimators around a sparse quantized MLP."""

from .qnn import NeuralNetClassifier, NeuralNetRegressor
from .qnn_module import MAX_BITWIDTH_BACKWARD_COMPATIBLE, SparseQuantNeuralNetwork

__all__ = [
    "MAX_BITWIDTH_BACKWARD_COMPATIBLE",
    "NeuralNetClassifier",
    "NeuralNetRegressor",
    "SparseQuantNeuralNetwork",
]
