"""compile_torch_model (post-training quantization) and compile_brevitas_qat_model."""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import numpy as np
import torch

from ..onnx import evaluate_onnx, export_brevitas_to_qonnx, export_torch_to_onnx, import_onnx
from ..quantization import PostTrainingOptions, QuantizedModule
from ..quantization.rounding import RoundingPlan
from ..quantization.stages import Stage

N_BITS_KEYS = ("model_inputs", "op_weights", "op_inputs")


@runtime_checkable
class PlansItsRounding(Protocol):
    """A network that rounds its accumulators while it trains and says how, layer by layer
    (SparseQuantNeuralNetwork). Its integer model applies that plan instead of choosing one."""

    def rounding_plan(self) -> RoundingPlan | None:
        """The bits each rounded layer removes; None if the network does not round."""


@runtime_checkable
class FinishesOnTheClient(Protocol):
    """A network whose exported output needs client-side stages after its dequantization
    (AveragedNetworks: the mean of the networks' blocks). Its integer model appends them."""

    def client_stages(self) -> tuple[Stage, ...]:
        """The stages, in order, that turn the circuit's dequantized output into the model's."""


def _as_numpy(inputset) -> np.ndarray:
    if isinstance(inputset, torch.Tensor):
        inputset = inputset.detach().cpu().numpy()
    inputset = np.asarray(inputset, dtype=np.float64)
    if inputset.ndim < 2 or inputset.shape[0] == 0:
        raise ValueError("The inputset must be a non-empty batch: shape (n_samples, ...).")
    if not np.all(np.isfinite(inputset)):
        raise ValueError("The inputset contains NaN or infinity.")
    return inputset


def _n_bits_per_role(n_bits) -> dict[str, int]:
    """One integer for every role, or a dict naming bits per role."""
    if isinstance(n_bits, dict):
        missing = set(N_BITS_KEYS) - set(n_bits)
        if missing:
            raise ValueError(
                f"n_bits dict needs the keys {N_BITS_KEYS}; missing {sorted(missing)}."
            )
        return {key: n_bits[key] for key in N_BITS_KEYS}
    return dict.fromkeys(N_BITS_KEYS, n_bits)


def build_torch_model(
    torch_model: torch.nn.Module,
    torch_inputset,
    n_bits=3,
    rounding_threshold_bits: int | None = None,
) -> QuantizedModule:
    """Post-training quantization of a float torch MLP, calibrated on ``torch_inputset``.

    Weights are quantized symmetric per tensor to ``op_weights`` bits; the input and every
    activation that feeds a linear layer get an unsigned ``model_inputs`` / ``op_inputs``-bit
    quantizer spanning the range seen on the inputset (and 0).
    """
    inputset = _as_numpy(torch_inputset)
    bits = _n_bits_per_role(n_bits)
    model = export_torch_to_onnx(torch_model, torch.as_tensor(inputset, dtype=torch.float32))
    post_training = PostTrainingOptions(
        input_bits=bits["model_inputs"],
        weight_bits=bits["op_weights"],
        activation_bits=bits["op_inputs"],
        calibration=evaluate_onnx(model, inputset),
    )
    return import_onnx(model, post_training, rounding_threshold_bits)


def build_brevitas_qat_model(
    brevitas_model: torch.nn.Module,
    torch_inputset,
    rounding_threshold_bits: int | str | None = None,
) -> QuantizedModule:
    """Import the integer model that a Brevitas network learned: its quantizers' scales, zero
    points and bit widths, so the integer model equals Brevitas' fake-quantized forward.

    A network that rounds its accumulators while it trains (:class:`PlansItsRounding`, like
    SparseQuantNeuralNetwork) keeps exactly that rounding; ``rounding_threshold_bits`` then
    must be None. Otherwise ``rounding_threshold_bits`` adds rounding after training. A network
    that finishes its output on the client (:class:`FinishesOnTheClient`) gets those stages.
    ``torch_inputset`` only fixes the input shape for the export; nothing is calibrated.
    """
    inputset = _as_numpy(torch_inputset)
    plan = brevitas_model.rounding_plan() if isinstance(brevitas_model, PlansItsRounding) else None
    model = export_brevitas_to_qonnx(brevitas_model, torch.as_tensor(inputset, dtype=torch.float32))
    finishes = isinstance(brevitas_model, FinishesOnTheClient)
    client_stages = brevitas_model.client_stages() if finishes else ()
    return import_onnx(model, None, rounding_threshold_bits, plan, client_stages)


def compile_torch_model(
    torch_model: torch.nn.Module,
    torch_inputset,
    n_bits=3,
    rounding_threshold_bits: int | None = None,
    configuration=None,
    p_error: float | None = None,
    global_p_error: float | None = None,
    verbose: bool = False,
) -> QuantizedModule:
    """Quantize a float torch MLP after training and compile it to an FHE circuit."""
    module = build_torch_model(torch_model, torch_inputset, n_bits, rounding_threshold_bits)
    return _compile(module, torch_inputset, configuration, p_error, global_p_error, verbose)


def compile_brevitas_qat_model(
    brevitas_model: torch.nn.Module,
    torch_inputset,
    rounding_threshold_bits: int | None = None,
    configuration=None,
    p_error: float | None = None,
    global_p_error: float | None = None,
    verbose: bool = False,
) -> QuantizedModule:
    """Import a Brevitas quantization-aware model and compile it to an FHE circuit."""
    module = build_brevitas_qat_model(brevitas_model, torch_inputset, rounding_threshold_bits)
    return _compile(module, torch_inputset, configuration, p_error, global_p_error, verbose)


def _compile(module, torch_inputset, configuration, p_error, global_p_error, verbose):
    """``module.compile`` on the inputset, each setting by keyword (QuantizedModule.compile
    makes the one CompileOptions from them)."""
    module.compile(
        _as_numpy(torch_inputset),
        configuration=configuration,
        p_error=p_error,
        global_p_error=global_p_error,
        verbose=verbose,
    )
    return module
