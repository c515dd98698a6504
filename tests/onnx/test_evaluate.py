"""The numpy ONNX evaluator (used to calibrate PTQ) computes what torch and Brevitas compute."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from qnn_sklearn.onnx import evaluate_onnx, export_brevitas_to_qonnx, export_torch_to_onnx

ACTIVATIONS = [
    torch.nn.ReLU(),
    torch.nn.Sigmoid(),
    torch.nn.Tanh(),
    torch.nn.ELU(alpha=0.7),
    torch.nn.SELU(),
    torch.nn.LeakyReLU(0.2),
    torch.nn.Softplus(),
    torch.nn.Softplus(beta=2.0),
    torch.nn.Hardsigmoid(),
    torch.nn.ReLU6(),
    torch.nn.Hardtanh(-2.0, 0.5),
    torch.nn.GELU(),
    torch.nn.GELU(approximate="tanh"),
    torch.nn.Hardswish(),
    torch.nn.CELU(alpha=0.6),
    torch.nn.PReLU(init=0.3),
    torch.nn.SiLU(),
    torch.nn.Mish(),
    torch.nn.Softsign(),
    torch.nn.Tanhshrink(),
]


def torch_output(model, x):
    with torch.no_grad():
        out = model(torch.tensor(x, dtype=torch.float32))
    return getattr(out, "value", out).numpy().astype(np.float64)


def graph_output(onnx_model, x):
    return evaluate_onnx(onnx_model, x)[onnx_model.graph.output[0].name]


@pytest.mark.parametrize("activation", ACTIVATIONS, ids=repr)
def test_evaluator_matches_torch_on_an_mlp(activation, mlp, make_inputset):
    torch.manual_seed(20)
    model = mlp(
        torch.nn.Linear(4, 16),
        activation,
        torch.nn.Linear(16, 16),
        activation,
        torch.nn.Linear(16, 3),
    )
    x = make_inputset(257, seed=21) * 3  # any batch size: export fixed batch 1 only
    onnx_model = export_torch_to_onnx(model, torch.tensor(x))
    out = graph_output(onnx_model, x)
    assert out.shape == (257, 3) and out.dtype == np.float64
    np.testing.assert_allclose(out, torch_output(model, x), rtol=1e-5, atol=1e-5)


def test_evaluator_returns_every_tensor(mlp, make_inputset):
    torch.manual_seed(22)
    model = mlp(torch.nn.Linear(4, 5), torch.nn.ReLU(), torch.nn.Linear(5, 2))
    x = make_inputset(9, seed=23)
    onnx_model = export_torch_to_onnx(model, torch.tensor(x))
    values = evaluate_onnx(onnx_model, x)
    graph = onnx_model.graph
    for node in graph.node:
        assert node.output[0] in values
    np.testing.assert_array_equal(values[graph.input[0].name], x.astype(np.float64))
    hidden = values[graph.node[1].output[0]]  # the ReLU
    with torch.no_grad():
        expected = torch.relu(model[0](torch.tensor(x))).numpy()
    np.testing.assert_allclose(hidden, expected, rtol=1e-5, atol=1e-6)
    assert hidden.min() >= 0.0


@pytest.mark.parametrize(
    ("name", "activation", "input_shape", "expected_ops"),
    [
        ("arithmetic", torch.tanh, (4,), {"Sub", "Div", "Mul", "Add", "Tanh"}),
        ("matmul", torch.sigmoid, (4,), {"MatMul", "Sigmoid"}),
        ("flatten", torch.relu, (2, 2), {"Flatten"}),
        ("reshape", torch.relu, (2, 2), {"Reshape"}),
        ("upper-clamp", None, (4,), {"Clip"}),
    ],
    ids=["arithmetic", "matmul", "flatten", "reshape", "upper-clamp"],
)
def test_evaluator_matches_torch_on_other_ops(name, activation, input_shape, expected_ops, op_net):
    torch.manual_seed(24)
    model = op_net(name, activation)
    x = np.random.default_rng(25).normal(size=(31, *input_shape)).astype(np.float32)
    onnx_model = export_torch_to_onnx(model, torch.tensor(x))
    assert expected_ops <= {node.op_type for node in onnx_model.graph.node}
    np.testing.assert_allclose(
        graph_output(onnx_model, x), torch_output(model, x), rtol=1e-5, atol=1e-5
    )


def test_evaluator_matches_brevitas_on_a_qonnx_graph(brevitas_qat_mlp, stress_inputs):
    """The Quant evaluator is Brevitas' fake quantization (round half to even, clip)."""
    model = brevitas_qat_mlp.torch_model
    x = stress_inputs(brevitas_qat_mlp.inputset, 2000).astype(np.float32)
    onnx_model = export_brevitas_to_qonnx(model, torch.tensor(x))
    assert "Quant" in {node.op_type for node in onnx_model.graph.node}
    out, reference = graph_output(onnx_model, x), torch_output(model, x)
    # float32 (torch) vs float64 (numpy) may flip a rounding tie on rare rows only
    close = np.all(np.isclose(out, reference, rtol=1e-4, atol=1e-4), axis=1)
    assert close.mean() >= 0.999


@pytest.mark.parametrize(
    ("layer", "op_type"),
    [(torch.nn.Softmax(dim=1), "Softmax"), (torch.nn.LayerNorm(8), "LayerNormalization")],
)
def test_evaluator_names_unsupported_operators(layer, op_type, mlp, make_inputset):
    model = mlp(torch.nn.Linear(4, 8), layer, torch.nn.Linear(8, 2))
    x = make_inputset(5)
    onnx_model = export_torch_to_onnx(model, torch.tensor(x))
    with pytest.raises(ValueError, match=f"Unsupported ONNX operator '{op_type}'"):
        evaluate_onnx(onnx_model, x)
