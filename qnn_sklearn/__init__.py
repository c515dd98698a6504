"""qnn_sklearn: quantized neural networks with scikit-learn habits, predicting on encrypted data."""

from .sklearn import NeuralNetClassifier, NeuralNetRegressor

__version__ = "0.1.0"

__all__ = ["NeuralNetClassifier", "NeuralNetRegressor", "__version__"]
