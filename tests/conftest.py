"""Shared fixtures: small torch / Brevitas MLPs, built and compiled once per session.

Compiling to concrete-python and, above all, generating real FHE keys are the expensive steps,
so every model here is session-scoped and tests must not mutate them.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
import pytest
import torch
from concrete import fhe

from qnn_sklearn.quantization import QuantizedModule
from qnn_sklearn.torch import build_brevitas_qat_model, build_torch_model, compile_torch_model

N_FEATURES = 4
N_CLASSES = 3


@dataclass
class ModelCase:
    """A torch model, its calibration inputs and the QuantizedModule built from it."""

    torch_model: torch.nn.Module
    inputset: np.ndarray
    module: QuantizedModule


def _make_inputset(n_rows: int, n_features: int = N_FEATURES, seed: int = 0) -> np.ndarray:
    """``make_inputset(n_rows, n_features=4, seed=0)``: standard normal float32 rows."""
    return np.random.default_rng(seed).normal(size=(n_rows, n_features)).astype(np.float32)


def _stress_inputs(inputset: np.ndarray, n_rows: int = 10_000, seed: int = 1) -> np.ndarray:
    """Rows inside the calibration range, up to 100x outside it, and grid corners.

    Half the random rows look like the calibration set, the other half are scaled by up to
    100; the sign patterns at 100x the largest calibration value hit every corner of the input
    grid, which is where the certified accumulator extremes of the first layer are reached.
    """
    rng = np.random.default_rng(seed)
    n_features = inputset.shape[1]
    reach = float(np.abs(inputset).max())
    corners = np.array(
        [[1.0 if (k >> j) & 1 else -1.0 for j in range(n_features)] for k in range(2**n_features)]
    )
    n_random = n_rows - len(corners)
    std = inputset.std(axis=0)
    inside = rng.normal(size=(n_random // 2, n_features)) * std
    outside = rng.normal(size=(n_random - n_random // 2, n_features)) * std
    outside *= rng.uniform(1.0, 100.0, size=(len(outside), 1))
    return np.concatenate([inside, outside, 100.0 * reach * corners])


def _mlp(*layers: torch.nn.Module) -> torch.nn.Sequential:
    """``mlp(*layers)``: a torch Sequential in eval mode."""
    return torch.nn.Sequential(*layers).eval()


class TwoLayerNet(torch.nn.Module):
    """``after(fc2(middle(fc1(before(x)))))`` with Linear(4, 8) and Linear(8, 3): the torch
    code of ``before``, ``middle`` and ``after`` exports the ops a test is about."""

    def __init__(self, middle=torch.relu, before=None, after=None):
        super().__init__()
        self.fc1 = torch.nn.Linear(N_FEATURES, 8)
        self.fc2 = torch.nn.Linear(8, N_CLASSES)
        self.middle = middle
        self.before = before or (lambda x: x)
        self.after = after or (lambda y: y)

    def forward(self, x):
        return self.after(self.fc2(self.middle(self.fc1(self.before(x)))))


class MatMulNet(torch.nn.Module):
    """Bias-free layers written as ``x @ w`` export as MatMul."""

    def __init__(self, activation=torch.relu):
        super().__init__()
        self.w1 = torch.nn.Parameter(torch.randn(N_FEATURES, 8) / 2)
        self.w2 = torch.nn.Parameter(torch.randn(8, N_CLASSES) / 3)
        self.activation = activation

    def forward(self, x):
        return self.activation(x @ self.w1) @ self.w2


def _op_net(name: str, activation=torch.relu) -> torch.nn.Module:
    """A fresh net (eval mode) whose ONNX export holds the ops ``name`` stands for.

    - arithmetic: constant Sub/Div before the first layer (client-side preprocessing),
      Mul/Sub between the layers (fused into the lookup), Add after the last (client-side
      dequantization);
    - matmul: ``x @ w`` layers (MatMul);
    - flatten / reshape: a (2, 2) input flattened (Flatten) or reshaped (``x.reshape``: an ONNX
      Reshape, with an ``allowzero`` attribute from opset 14) before the first layer;
    - upper-clamp: ``clamp(max=...)`` between the layers, a Clip whose ``min`` input is absent
      (an empty name).
    """
    if name == "arithmetic":
        model = TwoLayerNet(
            middle=lambda h: 3.0 * activation(h) - 1.0,
            before=lambda x: (x - 0.5) / 2.0,
            after=lambda y: y + 0.25,
        )
    elif name == "matmul":
        model = MatMulNet(activation)
    elif name == "flatten":
        model = TwoLayerNet(activation, before=lambda x: torch.flatten(x, 1))
    elif name == "reshape":
        model = TwoLayerNet(activation, before=lambda x: x.reshape(-1, N_FEATURES))
    elif name == "upper-clamp":
        model = TwoLayerNet(lambda h: torch.clamp(h, max=0.3))
    else:
        raise KeyError(name)
    return model.eval()


def _function_fixture(function):
    """A session fixture, named like ``function`` without its leading underscore, that hands
    the function itself to the tests (its docstring says how to call it)."""
    return pytest.fixture(scope="session", name=function.__name__.lstrip("_"))(lambda: function)


make_inputset = _function_fixture(_make_inputset)
stress_inputs = _function_fixture(_stress_inputs)
mlp = _function_fixture(_mlp)
op_net = _function_fixture(_op_net)


def _compiled_ptq(seed: int, widths: list[int], activations: list, inputset_seed: int):
    """Linear layers of the given widths with an activation between each two, 3-bit PTQ of
    300 calibration rows, compiled."""
    torch.manual_seed(seed)
    layers = [torch.nn.Linear(widths[0], widths[1])]
    for activation, n_in, n_out in zip(activations, widths[1:-1], widths[2:], strict=True):
        layers += [activation, torch.nn.Linear(n_in, n_out)]
    model = _mlp(*layers)
    inputset = _make_inputset(300, seed=inputset_seed)
    module = build_torch_model(model, inputset, n_bits=3)
    module.compile(inputset)
    return ModelCase(model, inputset, module)


@pytest.fixture(scope="session")
def ptq_relu_mlp() -> ModelCase:
    """Linear(4,16)-ReLU-Linear(16,16)-ReLU-Linear(16,3), 3-bit PTQ, compiled."""
    activations = [torch.nn.ReLU(), torch.nn.ReLU()]
    return _compiled_ptq(0, [N_FEATURES, 16, 16, N_CLASSES], activations, inputset_seed=0)


@pytest.fixture(scope="session")
def ptq_sigmoid_tanh_mlp() -> ModelCase:
    """Linear(4,12)-Sigmoid-Linear(12,8)-Tanh-Linear(8,3), 3-bit PTQ, compiled."""
    activations = [torch.nn.Sigmoid(), torch.nn.Tanh()]
    return _compiled_ptq(1, [N_FEATURES, 12, 8, N_CLASSES], activations, inputset_seed=2)


class BrevitasMLP(torch.nn.Module):
    """QuantIdentity input, 3-bit QuantLinear layers, 3-bit QuantReLU activations."""

    def __init__(self, n_hidden: int = 16):
        import brevitas.nn as qnn

        super().__init__()
        self.quant_input = qnn.QuantIdentity(bit_width=3, return_quant_tensor=True)
        self.fc1 = qnn.QuantLinear(N_FEATURES, n_hidden, bias=True, weight_bit_width=3)
        self.act1 = qnn.QuantReLU(bit_width=3, return_quant_tensor=True)
        self.fc2 = qnn.QuantLinear(n_hidden, n_hidden, bias=True, weight_bit_width=3)
        self.act2 = qnn.QuantReLU(bit_width=3, return_quant_tensor=True)
        self.fc3 = qnn.QuantLinear(n_hidden, N_CLASSES, bias=True, weight_bit_width=3)

    def forward(self, x):
        x = self.act1(self.fc1(self.quant_input(x)))
        return self.fc3(self.act2(self.fc2(x)))


def synthetic_labels(x: np.ndarray) -> np.ndarray:
    return (x[:, 0] + x[:, 1] * x[:, 2] > 0).astype(np.int64) + (x[:, 3] > 1)


def train_a_few_steps(model: torch.nn.Module, x: np.ndarray, n_steps: int = 25) -> None:
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    inputs, labels = torch.tensor(x), torch.tensor(synthetic_labels(x))
    model.train()
    for _ in range(n_steps):
        optimizer.zero_grad()
        loss = torch.nn.functional.cross_entropy(model(inputs), labels)
        loss.backward()
        optimizer.step()
    model.eval()


@pytest.fixture(scope="session")
def brevitas_qat_mlp() -> ModelCase:
    """The Brevitas MLP after a few training steps, imported and compiled."""
    torch.manual_seed(3)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = BrevitasMLP()
        inputset = _make_inputset(512, seed=4)
        train_a_few_steps(model, inputset)
        module = build_brevitas_qat_model(model, inputset)
    module.compile(inputset)
    return ModelCase(model, inputset, module)


@pytest.fixture(scope="session")
def insecure_fhe_configuration(tmp_path_factory) -> fhe.Configuration:
    """Real FHE keys are cached on disk: insecure, for tests only."""
    return fhe.Configuration(
        enable_unsafe_features=True,
        use_insecure_key_cache=True,
        insecure_key_cache_location=str(tmp_path_factory.mktemp("fhe_keys")),
    )


@pytest.fixture(scope="session")
def fhe_execution_mlp(insecure_fhe_configuration) -> ModelCase:
    """A tiny 2-bit PTQ MLP (4-bit accumulators, cheap keys) compiled for real FHE execution,
    keys generated once."""
    torch.manual_seed(5)
    model = _mlp(torch.nn.Linear(3, 6), torch.nn.ReLU(), torch.nn.Linear(6, 2))
    inputset = _make_inputset(100, n_features=3, seed=6)
    module = compile_torch_model(
        model, inputset, n_bits=2, configuration=insecure_fhe_configuration
    )
    module.fhe_circuit.keygen()
    return ModelCase(model, inputset, module)
