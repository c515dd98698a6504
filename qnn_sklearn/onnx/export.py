"""torch → ONNX and Brevitas → QONNX, in memory."""

from __future__ import annotations

import contextlib
import io
import os
import tempfile
import threading
import warnings

import onnx
import torch


def _dummy_input(torch_inputset: torch.Tensor) -> torch.Tensor:
    return torch.as_tensor(torch_inputset[:1], dtype=torch.float32)


_EXPORT_LOCK = threading.Lock()
"""One export at a time in a process: Brevitas refuses a second export while one is under way
(a process-wide flag), and the silencing below swaps process-wide stdout and warning filters.
Fits in threads of one process (a search with a threading backend) would otherwise fail."""


@contextlib.contextmanager
def _quiet_export():
    """One export at a time, silenced: the exporters print progress and warn about optional
    packages; a library should not."""
    with (
        _EXPORT_LOCK,
        warnings.catch_warnings(),
        contextlib.redirect_stdout(io.StringIO()),
    ):
        warnings.simplefilter("ignore")
        yield


def export_torch_to_onnx(model: torch.nn.Module, torch_inputset: torch.Tensor) -> onnx.ModelProto:
    """Export a float torch model with ``torch.onnx.export`` (one sample fixes the shape)."""
    model.eval()
    with tempfile.TemporaryDirectory() as tmp, _quiet_export():
        path = os.path.join(tmp, "model.onnx")
        torch.onnx.export(model, (_dummy_input(torch_inputset),), path, dynamo=False)
        return onnx.load(path)


def export_brevitas_to_qonnx(
    model: torch.nn.Module, torch_inputset: torch.Tensor
) -> onnx.ModelProto:
    """Export a Brevitas model to QONNX: quantizers become ``Quant`` nodes with their
    learned scale, zero point and bit width as constant inputs."""
    from brevitas.export import export_qonnx

    model.eval()
    with tempfile.TemporaryDirectory() as tmp, _quiet_export():
        path = os.path.join(tmp, "model.onnx")
        export_qonnx(model, _dummy_input(torch_inputset), export_path=path, dynamo=False)
        return onnx.load(path)
