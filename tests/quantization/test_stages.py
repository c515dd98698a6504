"""Stages: the new activation functions match torch's, and every stage survives JSON (the
client rebuilds its post-processing from it)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from qnn_sklearn.quantization.builder import ModuleBuilder
from qnn_sklearn.quantization.quantizers import QuantizationOptions, UniformQuantizer
from qnn_sklearn.quantization.stages import (
    MAX_COMBINATION_DEPTH,
    Activation,
    Affine,
    Combination,
    apply_stages,
    stage_from_json,
)
from qnn_sklearn.quantization.values import Encrypted

X = np.linspace(-8.0, 8.0, 2001)


@pytest.mark.parametrize(
    ("stage", "torch_function"),
    [
        (Activation("Gelu"), torch.nn.GELU()),
        (Activation("HardSwish"), torch.nn.Hardswish()),
        (Activation("Celu", alpha=0.6), torch.nn.CELU(alpha=0.6)),
        (Activation("Clip", low=0.0, high=6.0), torch.nn.ReLU6()),
        (Activation("Clip", high=0.5), lambda x: torch.clamp(x, max=0.5)),
        (Combination("Mul", (), (Activation("Sigmoid"),)), torch.nn.SiLU()),
        (
            Combination("Mul", (), (Activation("Softplus"), Activation("Tanh"))),
            torch.nn.Mish(),
        ),
        (
            Combination("Div", (), (Activation("Abs"), Affine(1.0, 1.0))),
            torch.nn.Softsign(),
        ),
    ],
    ids=["gelu", "hardswish", "celu", "relu6", "upper-clip", "silu", "mish", "softsign"],
)
def test_stage_is_torch_function_and_survives_json(stage, torch_function):
    with torch.no_grad():
        expected = torch_function(torch.tensor(X)).numpy()
    np.testing.assert_allclose(stage(X), expected, rtol=1e-12, atol=1e-12)
    restored = stage_from_json(json.loads(json.dumps(stage.to_json())))
    assert type(restored) is type(stage)
    np.testing.assert_array_equal(restored(X), stage(X))


def test_combination_of_per_feature_chains_broadcasts_like_a_table():
    """Tables evaluate stages on a column of stored integers against per-feature scales."""
    left = (Affine(np.array([1.0, 2.0, 3.0]), 0.0),)
    stage = Combination("Sub", left, (Activation("Tanh"),))
    values = np.arange(5)[:, None]
    expected = values * np.array([1.0, 2.0, 3.0]) - np.tanh(values)
    np.testing.assert_array_equal(apply_stages((stage,), values), expected)


def test_deeply_nested_combinations_are_refused_from_json():
    data = Activation("Relu").to_json()
    for _ in range(MAX_COMBINATION_DEPTH):
        data = {"kind": "combination", "op_type": "Mul", "left": [data], "right": []}
    stage_from_json(data)  # as deep as allowed
    data = {"kind": "combination", "op_type": "Mul", "left": [data], "right": []}
    with pytest.raises(ValueError, match="nest more than"):
        stage_from_json(data)


def test_an_activation_that_is_nan_somewhere_is_refused():
    """``h / h`` is NaN where the accumulator ``h`` is 0: no integer to put in the table."""
    stored_to_h = Affine(1.0, -2.0)  # stored integers 0..4 hold h = -2..2
    ratio = Combination("Div", (stored_to_h,), (stored_to_h,))
    quantizer = UniformQuantizer(QuantizationOptions(3, is_signed=False), 0.5, 0)
    builder = ModuleBuilder()
    with pytest.raises(ValueError, match="NaN"):
        builder.add_lookup(Encrypted(np.array([4]), (ratio,)), quantizer)
    # divided by stored + 1 instead, which is never 0: a table
    shifted = Combination("Div", (stored_to_h,), (Affine(1.0, 1.0),))
    builder.add_lookup(Encrypted(np.array([4]), (shifted,)), quantizer)
