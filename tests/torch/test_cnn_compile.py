"""A small CNN with convolution, batch norm, max and average pooling and a residual add,
through both entry points: post-training (compile_torch_model) and Brevitas QAT
(compile_brevitas_qat_model). Simulation equals the clear integer forward on 1,000 rows up to
100x outside the calibration range; real FHE equals it on 2 rows."""

from __future__ import annotations

import warnings

import brevitas.nn as qnn
import numpy as np
import pytest
import torch

from qnn_sklearn.torch import compile_brevitas_qat_model, compile_torch_model

SIDE = 4
"""Input images are 1 × SIDE × SIDE: the network stays tiny, so real FHE stays fast."""


class FloatCNN(torch.nn.Module):
    """Conv-BN-ReLU, MaxPool 2×2, a residual Conv-ReLU block, GlobalAveragePool, Linear."""

    def __init__(self):
        super().__init__()
        self.conv1 = torch.nn.Conv2d(1, 2, 3, padding=1)
        self.bn = torch.nn.BatchNorm2d(2)
        self.conv2 = torch.nn.Conv2d(2, 2, 3, padding=1)
        self.fc = torch.nn.Linear(2, 3)

    def forward(self, x):
        h = torch.max_pool2d(torch.relu(self.bn(self.conv1(x))), 2)
        h = h + torch.relu(self.conv2(h))
        return self.fc(torch.flatten(torch.nn.functional.adaptive_avg_pool2d(h, 1), 1))


class BrevitasCNN(torch.nn.Module):
    """The same network with QuantConv2d layers, and one shared QuantIdentity on both branches
    of the residual add (so that they add on one grid)."""

    def __init__(self, bits: int = 2):
        super().__init__()
        self.quant_input = qnn.QuantIdentity(bit_width=bits, return_quant_tensor=True)
        self.conv1 = qnn.QuantConv2d(1, 2, 3, padding=1, weight_bit_width=bits)
        self.bn = torch.nn.BatchNorm2d(2)
        self.act1 = qnn.QuantReLU(bit_width=bits)
        self.conv2 = qnn.QuantConv2d(2, 2, 3, padding=1, weight_bit_width=bits)
        self.act2 = qnn.QuantReLU(bit_width=bits)
        self.shared = qnn.QuantIdentity(bit_width=bits)
        self.quant_pool = qnn.QuantIdentity(bit_width=bits, return_quant_tensor=True)
        self.fc = qnn.QuantLinear(2, 3, bias=True, weight_bit_width=bits)

    def forward(self, x):
        h = torch.max_pool2d(self.act1(self.bn(self.conv1(self.quant_input(x)))), 2)
        h = self.shared(h) + self.shared(self.act2(self.conv2(h)))
        pooled = self.quant_pool(torch.nn.functional.avg_pool2d(h, h.shape[-1]))
        return self.fc(torch.flatten(pooled, 1))


def images(n_rows: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(n_rows, 1, SIDE, SIDE)).astype(np.float32)


def stress_images(inputset: np.ndarray, n_rows: int = 1_000, seed: int = 7) -> np.ndarray:
    """Rows like the calibration set, rows up to 100x outside it, and ±100x sign patterns."""
    rng = np.random.default_rng(seed)
    reach = float(np.abs(inputset).max())
    signs = np.where(rng.random((20, *inputset.shape[1:])) < 0.5, -1.0, 1.0)
    n_random = n_rows - len(signs)
    rows = rng.normal(size=(n_random, *inputset.shape[1:]))
    rows[n_random // 2 :] *= rng.uniform(1.0, 100.0, size=(n_random - n_random // 2, 1, 1, 1))
    return np.concatenate([rows, 100.0 * reach * signs])


def with_batch_norm_statistics(model: torch.nn.Module) -> torch.nn.Module:
    with torch.no_grad():
        model.bn.running_mean.uniform_(-0.5, 0.5)
        model.bn.running_var.uniform_(0.5, 2.0)
        model.bn.weight.uniform_(0.5, 1.5)
    return model.eval()


@pytest.fixture(scope="module")
def ptq_cnn(insecure_fhe_configuration):
    torch.manual_seed(40)
    model = with_batch_norm_statistics(FloatCNN())
    inputset = images(200, seed=41)
    module = compile_torch_model(
        model,
        inputset,
        n_bits=3,
        rounding_threshold_bits=5,
        configuration=insecure_fhe_configuration,
    )
    return model, inputset, module


@pytest.fixture(scope="module")
def qat_cnn(insecure_fhe_configuration):
    torch.manual_seed(42)
    model = BrevitasCNN()
    inputset = images(200, seed=43)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model.train()
        with torch.no_grad():
            model(torch.tensor(inputset))  # the activation quantizers' calibration pass
        model = with_batch_norm_statistics(model)
        module = compile_brevitas_qat_model(
            model, inputset, configuration=insecure_fhe_configuration
        )
    return model, inputset, module


def op_types(module) -> set[str]:
    return {report["layer"].split("/")[-1] for report in module.bitwidth_report()}


@pytest.mark.parametrize("case", ["ptq_cnn", "qat_cnn"])
def test_cnn_simulation_equals_clear_far_outside_calibration(case, request):
    model, inputset, module = request.getfixturevalue(case)
    assert {"Conv", "MaxPool", "Add"} <= op_types(module)
    x = stress_images(inputset)
    assert np.abs(x).max() >= 100 * np.abs(inputset).max()
    q = module.quantize_input(x)
    clear = module.quantized_forward(q, fhe="disable")
    simulated = module.quantized_forward(q, fhe="simulate")
    assert simulated.shape == clear.shape == (1_000, 3)
    mismatches = np.flatnonzero(np.any(simulated != clear, axis=1))
    assert mismatches.size == 0, f"{mismatches.size} rows differ, e.g. {mismatches[:5]}"
    # every layer's accumulators stayed inside their certified ranges
    module.calibrate(q)
    for report in module.layers:
        assert report.accumulator_min.min() <= report.calibrated_min
        assert report.calibrated_max <= report.accumulator_max.max()


def test_cnn_real_fhe_equals_clear(qat_cnn):
    """Encrypted, with the insecure key cache (tests only); the QAT network, the cheaper of
    the two to key (simulation above covers the post-training one's lookups)."""
    _, inputset, module = qat_cnn
    q = module.quantize_input(inputset[:2])
    executed = module.quantized_forward(q, fhe="execute")
    np.testing.assert_array_equal(executed, module.quantized_forward(q, fhe="disable"))


def test_qat_cnn_equals_brevitas(qat_cnn):
    """The integer model is Brevitas' fake-quantized forward (float32 rounding aside)."""
    model, inputset, module = qat_cnn
    x = stress_images(inputset).astype(np.float32)
    with torch.no_grad():
        reference = model(torch.tensor(x)).numpy().astype(np.float64)
    out = module.forward(x)
    assert np.mean(np.all(np.isclose(out, reference, rtol=1e-4, atol=1e-4), axis=1)) >= 0.999
    assert len(np.unique(reference.argmax(axis=1))) >= 2  # not a constant network


def test_ptq_cnn_tracks_the_float_network(ptq_cnn):
    model, inputset, module = ptq_cnn
    with torch.no_grad():
        reference = model(torch.tensor(inputset)).numpy()
    agreement = np.mean(module.forward(inputset).argmax(axis=1) == reference.argmax(axis=1))
    assert agreement >= 0.7, agreement


def test_max_pool_report_counts_three_lookups_per_output(qat_cnn):
    (report,) = [r for r in qat_cnn[2].bitwidth_report() if r["layer"].endswith("MaxPool")]
    assert report["pbs_count"] == 3 * report["neurons"]  # a 2×2 window: 4 − 1 maxima


def test_a_convolutional_output_keeps_its_shape_in_every_mode():
    """A network ending on a convolution: clear, simulated and dequantized outputs are all
    (n, C, H, W), and the per-channel dequantization applies to the right channel."""
    torch.manual_seed(44)
    model = torch.nn.Sequential(
        torch.nn.Conv2d(1, 2, 3), torch.nn.ReLU(), torch.nn.Conv2d(2, 3, 1)
    ).eval()
    inputset = images(50, seed=45)
    module = compile_torch_model(model, inputset, n_bits=3)
    q = module.quantize_input(inputset[:4])
    clear = module.quantized_forward(q)
    assert clear.shape == (4, 3, 2, 2) and module.output_shape == (3, 2, 2)
    np.testing.assert_array_equal(module.quantized_forward(q, fhe="simulate"), clear)
    with torch.no_grad():
        reference = model(torch.tensor(inputset[:4])).numpy()
    error = np.abs(module.dequantize_output(clear) - reference).mean()
    assert error < np.abs(module.dequantize_output(clear) - np.roll(reference, 1, axis=1)).mean()
