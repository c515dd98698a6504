"""qnn_sklearn: quantized neural networks with scikit-learn habits, predicting on encrypted data."""

__version__ = "0.1.0"
