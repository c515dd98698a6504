"""The ONNX_OPS_TO_QUANTIZED_IMPL registry: every activation torch exports builds, simulates
bit-exactly, and quantizes close to float; the other MLP operators (Add, Sub, Mul, Div,
Constant, MatMul, Flatten) translate too."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from qnn_sklearn.onnx import export_torch_to_onnx
from qnn_sklearn.quantization import ONNX_OPS_TO_QUANTIZED_IMPL
from qnn_sklearn.quantization.elementwise_ops import QuantizedActivation
from qnn_sklearn.quantization.program import LookupStep
from qnn_sklearn.quantization.stages import ACTIVATIONS, BINARY_OPERATIONS, Activation
from qnn_sklearn.torch import build_torch_model


class Erf(torch.nn.Module):
    def forward(self, x):
        return torch.erf(x)


TORCH_ACTIVATIONS = {
    "Relu": torch.nn.ReLU,
    "Sigmoid": torch.nn.Sigmoid,
    "Tanh": torch.nn.Tanh,
    "Elu": lambda: torch.nn.ELU(alpha=0.7),
    "Selu": torch.nn.SELU,
    "LeakyRelu": lambda: torch.nn.LeakyReLU(0.1),
    "Softplus": torch.nn.Softplus,
    "HardSigmoid": torch.nn.Hardsigmoid,
    "Clip": torch.nn.ReLU6,
    "Gelu": torch.nn.GELU,
    "HardSwish": torch.nn.Hardswish,
    "Celu": lambda: torch.nn.CELU(alpha=0.6),
    "Abs": torch.nn.Softsign,  # x / (1 + |x|): an Abs, and a Div of two views of x
    "PRelu": lambda: torch.nn.PReLU(init=0.3),
    "Erf": Erf,
}
"""ONNX op type → a torch module that exports to it."""

FORKED_ACTIVATIONS = {
    "SiLU": (torch.nn.SiLU, "Mul"),
    "Mish": (torch.nn.Mish, "Mul"),
    "Tanhshrink": (torch.nn.Tanhshrink, "Sub"),
    "Softsign": (torch.nn.Softsign, "Div"),
}
"""torch activations exported as a fork of the tensor that joins again (``x · sigmoid(x)``),
and the ONNX op type that joins it."""


def node_types(model: torch.nn.Module, inputset: np.ndarray) -> list[str]:
    return [node.op_type for node in export_torch_to_onnx(model, torch.tensor(inputset)).graph.node]


def float_output(model: torch.nn.Module, x: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        return model(torch.tensor(x, dtype=torch.float32)).numpy().astype(np.float64)


def test_every_registered_activation_is_exercised():
    registered = {
        op
        for op, implementation in ONNX_OPS_TO_QUANTIZED_IMPL.items()
        if issubclass(implementation, QuantizedActivation)
    }
    assert registered == set(TORCH_ACTIVATIONS)


def test_every_stage_function_has_its_class():
    """Each activation and arithmetic function the stages evaluate is registered, under a class
    of its own whose op_type is its key (Dropout is read as Identity)."""
    assert set(ACTIVATIONS) | set(BINARY_OPERATIONS) <= set(ONNX_OPS_TO_QUANTIZED_IMPL)
    for op, implementation in ONNX_OPS_TO_QUANTIZED_IMPL.items():
        assert implementation.op_type == ("Identity" if op == "Dropout" else op)


@pytest.mark.parametrize("op_type", sorted(TORCH_ACTIVATIONS))
def test_activation_simulation_equals_clear(op_type, mlp, make_inputset, stress_inputs):
    torch.manual_seed(10)
    act = TORCH_ACTIVATIONS[op_type]
    model = mlp(torch.nn.Linear(4, 8), act(), torch.nn.Linear(8, 8), act(), torch.nn.Linear(8, 3))
    inputset = make_inputset(200, seed=11)
    assert node_types(model, inputset).count(op_type) == 2  # the registry entry is used
    module = build_torch_model(model, inputset, n_bits=3)
    module.compile(inputset)
    q = module.quantize_input(stress_inputs(inputset, 300))
    clear = module.quantized_forward(q)
    simulated = module.quantized_forward(q, fhe="simulate")
    np.testing.assert_array_equal(simulated, clear)
    assert len(np.unique(clear, axis=0)) > 10  # not a constant model


@pytest.mark.parametrize("op_type", sorted(TORCH_ACTIVATIONS) + ["Softplus(beta=2)"])
def test_eight_bit_ptq_is_close_to_float(op_type, mlp, make_inputset):
    """8-bit PTQ stays within a few output steps (output range / 2⁸) of torch's float output,
    and is much closer than 4-bit PTQ. Two inputs keep the hidden accumulators <= 16 bits."""
    torch.manual_seed(12)
    if op_type == "Softplus(beta=2)":
        act = torch.nn.Softplus(beta=2.0)  # exports as Mul → Softplus → Div with Constants
    else:
        act = TORCH_ACTIVATIONS[op_type]()
    model = mlp(torch.nn.Linear(2, 8), act, torch.nn.Linear(8, 3))
    inputset = make_inputset(400, n_features=2, seed=13)
    reference = float_output(model, inputset)
    step = np.ptp(reference) / 2**8
    errors = {}
    for n_bits in (4, 8):
        module = build_torch_model(model, inputset, n_bits=n_bits)
        errors[n_bits] = np.abs(module.forward(inputset) - reference).max()
    assert errors[8] <= 6 * step
    assert errors[8] < errors[4] / 4


@pytest.mark.parametrize(
    ("name", "input_shape", "expected_ops"),
    [
        ("arithmetic", (4,), {"Sub", "Div", "Mul", "Add", "Constant"}),
        ("matmul", (4,), {"MatMul"}),
        ("flatten", (2, 2), {"Flatten"}),
    ],
    ids=["arithmetic", "matmul", "flatten"],
)
def test_other_mlp_operators(name, input_shape, expected_ops, stress_inputs, op_net):
    torch.manual_seed(14)
    model = op_net(name)
    rng = np.random.default_rng(15)
    inputset = rng.normal(size=(300, *input_shape)).astype(np.float32)
    assert expected_ops <= set(node_types(model, inputset))
    module = build_torch_model(model, inputset, n_bits=6)
    assert module.input_shape == input_shape
    reference = float_output(model, inputset)
    error = np.abs(module.forward(inputset) - reference).max()
    assert error <= 0.1 * np.ptp(reference)  # 6 bits: a few percent of the output range
    # a 3-bit version in simulation (rows flattened by the client-side preprocessing)
    module = build_torch_model(model, inputset, n_bits=3)
    module.compile(inputset)
    flat = inputset.reshape(len(inputset), -1)
    x = stress_inputs(flat, 200).reshape(-1, *input_shape)
    q = module.quantize_input(x)
    np.testing.assert_array_equal(
        module.quantized_forward(q, fhe="simulate"), module.quantized_forward(q)
    )


@pytest.mark.parametrize("name", sorted(FORKED_ACTIVATIONS))
def test_forked_activation_is_one_lookup(name, mlp, make_inputset, stress_inputs):
    """The two branches of ``x · sigmoid(x)`` and the like read the same accumulator: the
    integer model keeps one lookup per neuron, simulates bit-exactly, and at 8 bits stays
    within a few output steps of torch."""
    torch.manual_seed(16)
    make, join = FORKED_ACTIVATIONS[name]
    model = mlp(torch.nn.Linear(2, 8), make(), torch.nn.Linear(8, 8), make(), torch.nn.Linear(8, 3))
    inputset = make_inputset(300, n_features=2, seed=17)
    assert node_types(model, inputset).count(join) == 2
    module = build_torch_model(model, inputset, n_bits=3)
    lookups = [step for step in module.layer_steps if isinstance(step, LookupStep)]
    assert [len(step.tables) for step in lookups] == [8, 8]
    module.compile(inputset)
    q = module.quantize_input(stress_inputs(inputset, 300))
    clear = module.quantized_forward(q)
    np.testing.assert_array_equal(module.quantized_forward(q, fhe="simulate"), clear)
    assert len(np.unique(clear, axis=0)) > 10
    # 8 bits, one hidden layer (two keep the accumulators <= 16 bits): close to torch
    model = mlp(torch.nn.Linear(2, 8), make(), torch.nn.Linear(8, 3))
    reference = float_output(model, inputset)
    error = np.abs(build_torch_model(model, inputset, n_bits=8).forward(inputset) - reference)
    assert error.max() <= 6 * np.ptp(reference) / 2**8


def test_gelu_tanh_approximation_is_its_own_function(mlp, make_inputset):
    """GELU(approximate="tanh") exports the attribute, the stage computes torch's tanh
    formula (not the erf one), and at 8 bits the integer model follows torch."""
    torch.manual_seed(18)
    model = mlp(torch.nn.Linear(2, 8), torch.nn.GELU(approximate="tanh"), torch.nn.Linear(8, 3))
    inputset = make_inputset(300, n_features=2, seed=19)
    graph = export_torch_to_onnx(model, torch.tensor(inputset)).graph
    (gelu,) = [node for node in graph.node if node.op_type == "Gelu"]
    assert [(a.name, a.s) for a in gelu.attribute] == [("approximate", b"tanh")]
    x = np.linspace(-6, 6, 1001)
    with torch.no_grad():
        torch_tanh_gelu = torch.nn.functional.gelu(torch.tensor(x), approximate="tanh").numpy()
    np.testing.assert_allclose(
        Activation("Gelu", approximate=b"tanh")(x), torch_tanh_gelu, atol=1e-12
    )
    assert np.abs(Activation("Gelu")(x) - torch_tanh_gelu).max() > 1e-4  # a different curve
    reference = float_output(model, inputset)
    error = np.abs(build_torch_model(model, inputset, n_bits=8).forward(inputset) - reference)
    assert error.max() <= 6 * np.ptp(reference) / 2**8


def test_two_different_activations_cannot_be_combined(make_inputset):
    """The product of two layers' outputs is not one function of one accumulator: refused."""

    class TwoBranches(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.first = torch.nn.Linear(2, 4)
            self.a, self.b = torch.nn.Linear(4, 4), torch.nn.Linear(4, 4)
            self.out = torch.nn.Linear(4, 3)

        def forward(self, x):
            hidden = torch.relu(self.first(x))
            return self.out(torch.relu(self.a(hidden)) * torch.relu(self.b(hidden)))

    torch.manual_seed(20)
    inputset = make_inputset(50, n_features=2, seed=21)
    with pytest.raises(ValueError, match="Mul of two different activations"):
        build_torch_model(TwoBranches().eval(), inputset, n_bits=3)
