"""Exported torch graphs with the CNN ops: the float evaluator (post-training calibration)
equals torch, and the post-training integer model of graphs that mix them builds, tracks the
float network and simulates bit-exactly."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from onnx import helper

from qnn_sklearn.onnx import evaluate_onnx, export_torch_to_onnx
from qnn_sklearn.onnx.evaluate import evaluate_node
from qnn_sklearn.quantization.program import LookupStep
from qnn_sklearn.torch import build_torch_model


class Lambda(torch.nn.Module):
    def __init__(self, function):
        super().__init__()
        self.function = function

    def forward(self, x):
        return self.function(x)


MASK = torch.tensor([[True, False], [False, True]])

GRAPHS = {
    "Conv": (
        lambda: torch.nn.Conv2d(
            4, 6, (3, 2), stride=(2, 1), padding=(1, 0), dilation=(1, 2), groups=2
        ),
        (4, 6, 6),
    ),
    "Conv1d": (lambda: torch.nn.Conv1d(2, 3, 3, padding=2, dilation=2), (2, 7)),
    "BatchNormalization": (
        lambda: torch.nn.Sequential(Lambda(torch.relu), torch.nn.BatchNorm2d(2)),
        (2, 3, 3),
    ),
    "MaxPool": (lambda: torch.nn.MaxPool2d(3, stride=2, padding=1), (2, 5, 5)),
    "AveragePool": (
        lambda: torch.nn.AvgPool2d(3, stride=2, padding=1, count_include_pad=False),
        (2, 5, 5),
    ),
    "GlobalAveragePool": (lambda: torch.nn.AdaptiveAvgPool2d(1), (3, 4, 5)),
    "Pad": (
        lambda: Lambda(lambda x: torch.nn.functional.pad(x, (1, 2, 0, 1), value=0.5)),
        (2, 3, 3),
    ),
    "Transpose": (lambda: Lambda(lambda x: x.permute(0, 2, 3, 1)), (2, 3, 4)),
    "Concat": (lambda: Lambda(lambda x: torch.cat([x, 2 * x], dim=2)), (2, 3, 3)),
    "Where": (lambda: Lambda(lambda x: torch.where(MASK, x, torch.tensor(0.5))), (2, 2)),
    "Erf": (lambda: Lambda(torch.erf), (5,)),
}
"""Op name → (a torch module that exports it, the input's feature shape)."""


def node_types(model, x) -> list[str]:
    return [node.op_type for node in export_torch_to_onnx(model, torch.tensor(x)).graph.node]


@pytest.mark.parametrize("name", sorted(GRAPHS))
def test_float_evaluator_equals_torch(name):
    torch.manual_seed(50)
    make, shape = GRAPHS[name]
    model = make().eval()
    if name == "BatchNormalization":
        model[1].running_mean.uniform_(-1, 1)
        model[1].running_var.uniform_(0.5, 2)
    x = np.random.default_rng(51).normal(size=(5, *shape)).astype(np.float32)
    onnx_model = export_torch_to_onnx(model, torch.tensor(x))
    assert name.removesuffix("1d") in [node.op_type for node in onnx_model.graph.node]
    values = evaluate_onnx(onnx_model, x)
    with torch.no_grad():
        reference = model(torch.tensor(x)).numpy()
    np.testing.assert_allclose(values[onnx_model.graph.output[0].name], reference, atol=1e-5)


class MixedNet(torch.nn.Module):
    """Pad, Conv (bias-free), Transpose, Concat, Where, AvgPool without padded counts and a
    GELU written with erf, between a first and a last linear layer."""

    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(1, 2, 2, bias=False)
        self.fc = torch.nn.Linear(2 * 3 * 6, 3)

    def forward(self, x):
        h = self.conv(torch.nn.functional.pad(x, (1, 1, 1, 1)))  # (2, 5, 5)
        h = h * 0.5 * (1.0 + torch.erf(h / math.sqrt(2.0)))
        h = torch.nn.functional.avg_pool2d(h, 3, 2, 1, count_include_pad=False)  # (2, 3, 3)
        h = torch.cat([h, h.transpose(2, 3)], dim=3)  # (2, 3, 6)
        h = torch.where(torch.arange(6) < 4, h, torch.tensor(0.0))
        return self.fc(h.flatten(1))


def test_mixed_graph_builds_tracks_float_and_simulates_exactly():
    torch.manual_seed(52)
    model = MixedNet().eval()
    x = np.random.default_rng(53).normal(size=(300, 1, 4, 4)).astype(np.float32)
    types = set(node_types(model, x))
    assert {"Pad", "Conv", "Erf", "AveragePool", "Transpose", "Concat", "Where"} <= types
    module = build_torch_model(model, x, n_bits=6, rounding_threshold_bits=7)
    with torch.no_grad():
        reference = model(torch.tensor(x)).numpy()
    out = module.forward(x)
    assert np.mean(out.argmax(axis=1) == reference.argmax(axis=1)) >= 0.8
    # GELU via Div/Erf/Add/Mul/Mul is one lookup per element of the convolution's output
    first_lookup = next(step for step in module.layer_steps if isinstance(step, LookupStep))
    assert first_lookup.tables.shape[0] == 2 * 5 * 5
    module.compile(x)
    rng = np.random.default_rng(54)
    rows = rng.normal(size=(300, 1, 4, 4)) * rng.uniform(1, 100, size=(300, 1, 1, 1))
    q = module.quantize_input(np.concatenate([x, rows]))
    np.testing.assert_array_equal(
        module.quantized_forward(q, fhe="simulate"), module.quantized_forward(q)
    )


def test_constant_subgraphs_are_folded_but_bounded():
    """torch writes a Pad's widths as ConstantOfShape/Slice/Cast on constants, which the
    importer folds; an untrusted ConstantOfShape asking for a huge tensor is refused."""
    node = helper.make_node("ConstantOfShape", ["shape"], ["out"])
    np.testing.assert_array_equal(evaluate_node(node, [np.array([2, 3])], False), np.zeros((2, 3)))
    with pytest.raises(ValueError, match="ConstantOfShape"):
        evaluate_node(node, [np.array([2**20, 2**20])], False)
    x = np.random.default_rng(55).normal(size=(3, 2, 3, 3)).astype(np.float32)
    model = torch.nn.ZeroPad2d(1).eval()
    assert "ConstantOfShape" in node_types(model, x)
    exported = export_torch_to_onnx(model, torch.tensor(x))
    padded = evaluate_onnx(exported, x)[exported.graph.output[0].name]
    np.testing.assert_array_equal(padded, np.pad(x, ((0, 0), (0, 0), (1, 1), (1, 1))))
