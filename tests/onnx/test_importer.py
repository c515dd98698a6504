"""import_onnx: the graph walk that turns an ONNX graph into a QuantizedModule."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from qnn_sklearn.onnx import (
    UnsupportedOperatorError,
    evaluate_onnx,
    export_torch_to_onnx,
    import_onnx,
)
from qnn_sklearn.quantization import PostTrainingOptions
from qnn_sklearn.quantization.rounding import RoundingPlan


def _exported(model: torch.nn.Module, inputset: np.ndarray):
    graph = export_torch_to_onnx(model.eval(), torch.tensor(inputset))
    return graph, PostTrainingOptions(3, 3, 3, evaluate_onnx(graph, inputset))


def test_imports_a_float_graph_with_post_training_quantization(make_inputset):
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(4, 5), torch.nn.ReLU(), torch.nn.Linear(5, 3))
    inputset = make_inputset(50)
    graph, options = _exported(model, inputset)
    module = import_onnx(graph, options)
    assert module.input_shape == (4,)
    assert [layer.n_neurons for layer in module.layers] == [5, 3]
    assert module.program in ("layered", "tabulated")
    with torch.no_grad():
        expected = model(torch.tensor(inputset)).numpy()
    assert np.corrcoef(module.forward(inputset).ravel(), expected.ravel())[0, 1] > 0.9


def test_unsupported_operator_is_named(make_inputset):
    model = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.Softmax(dim=1))
    inputset = make_inputset(20)
    graph = export_torch_to_onnx(model.eval(), torch.tensor(inputset))
    # the evaluator refuses Softmax too: calibrate only the input, the walk stops at Softmax
    options = PostTrainingOptions(3, 3, 3, {graph.graph.input[0].name: inputset})
    with pytest.raises(UnsupportedOperatorError, match="'Softmax'.*Supported: .*Gemm"):
        import_onnx(graph, options)


def test_a_rounding_plan_must_match_the_rounded_layers(make_inputset):
    model = torch.nn.Sequential(torch.nn.Linear(4, 5), torch.nn.ReLU(), torch.nn.Linear(5, 3))
    graph, options = _exported(model, make_inputset(20))
    with pytest.raises(ValueError, match="rounding plan has 2 layers for 1 linear layers"):
        import_onnx(graph, options, rounding_plan=RoundingPlan((0, 0)))
    with pytest.raises(ValueError, match="not both"):
        import_onnx(graph, options, rounding_threshold_bits=3, rounding_plan=RoundingPlan((0,)))
