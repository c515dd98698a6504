"""The CNN on scikit-learn's 8×8 digits: its network, data and training, in torch and Brevitas only.

examples/cnn_digits.py compiles it with qnn_sklearn; anchor.py compiles the very same network
with each system in the side-by-side benchmark. Kept free of qnn_sklearn so that the Concrete
ML venv (Brevitas 0.10.2, torch 2.3.1), where qnn_sklearn is not installed, builds and trains it
from this one definition too.
"""

from __future__ import annotations

import numpy as np
import torch
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split

EPOCHS = 40
BITS = 3
ROUNDING_THRESHOLD_BITS = 6
"""The example's defaults: epochs, weight and activation bits, accumulator rounding."""


def build_cnn(
    bits: int | None = BITS, channels: tuple[int, int] = (4, 8), quantize_pool: bool = False
) -> torch.nn.Module:
    """The CNN for 1×8×8 images and 10 classes; a float torch network if ``bits`` is None, else
    its Brevitas version with ``bits``-bit weights and activations.

    Conv 3×3 → BatchNorm → ReLU → MaxPool 2×2 → Conv 3×3 → BatchNorm → ReLU → AvgPool 2×2 →
    Linear. ``quantize_pool`` puts a ``QuantIdentity`` between the max pool and the second conv:
    Concrete ML's QAT import requires one before every conv (it refuses a max pool's output
    there, quantized though it is), so the side-by-side benchmark gives both systems that one.
    """
    first, second = channels
    if bits is None:
        return torch.nn.Sequential(
            torch.nn.Conv2d(1, first, 3, padding=1),
            torch.nn.BatchNorm2d(first),
            torch.nn.ReLU(),
            torch.nn.MaxPool2d(2),
            torch.nn.Conv2d(first, second, 3, padding=1),
            torch.nn.BatchNorm2d(second),
            torch.nn.ReLU(),
            torch.nn.AvgPool2d(2),
            torch.nn.Flatten(),
            torch.nn.Linear(second * 4, 10),
        )
    import brevitas.nn as qnn

    return torch.nn.Sequential(
        qnn.QuantIdentity(bit_width=bits, signed=False, return_quant_tensor=True),
        qnn.QuantConv2d(1, first, 3, padding=1, weight_bit_width=bits),
        torch.nn.BatchNorm2d(first),
        qnn.QuantReLU(bit_width=bits),
        torch.nn.MaxPool2d(2),
        *([qnn.QuantIdentity(bit_width=bits, signed=False)] if quantize_pool else []),
        qnn.QuantConv2d(first, second, 3, padding=1, weight_bit_width=bits),
        torch.nn.BatchNorm2d(second),
        qnn.QuantReLU(bit_width=bits),
        torch.nn.AvgPool2d(2),
        qnn.QuantIdentity(bit_width=bits, signed=False, return_quant_tensor=True),
        torch.nn.Flatten(),
        qnn.QuantLinear(second * 4, 10, bias=True, weight_bit_width=bits),
    )


def load():
    """Digits as 1×8×8 images in [0, 1]; a stratified 75/25 split."""
    X, y = load_digits(return_X_y=True)
    X = (X / 16.0).reshape(-1, 1, 8, 8).astype(np.float32)
    return train_test_split(X, y, test_size=0.25, stratify=y, random_state=0)


def train(model: torch.nn.Module, X, y, epochs: int = EPOCHS, seed: int = 0) -> torch.nn.Module:
    """Adam, batch 64, cross-entropy; returns the model in evaluation mode."""
    torch.manual_seed(seed)
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    inputs, labels = torch.tensor(X), torch.tensor(y)
    model.train()
    for _ in range(epochs):
        for batch in torch.randperm(len(X)).split(64):
            optimizer.zero_grad()
            torch.nn.functional.cross_entropy(model(inputs[batch]), labels[batch]).backward()
            optimizer.step()
    return model.eval()


def torch_predict(model: torch.nn.Module, X) -> np.ndarray:
    """Labels from the torch network (a Brevitas one returns a QuantTensor: its value)."""
    with torch.no_grad():
        out = model(torch.tensor(X))
    return getattr(out, "value", out).numpy().argmax(axis=1)
