"""The ONNX → integer program importer: walks a (Q)ONNX graph into a QuantizedModule.

Each node is translated by the class the op registry (ONNX_OPS_TO_QUANTIZED_IMPL) names for
its op type; the classes emit program steps through a ModuleBuilder, which certifies every
accumulator. Everything ONNX-specific (initializers, the data input and its shape, node
attributes) is read here; the integer world (quantization/) only sees values and steps.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import numpy_helper

from ..quantization import ONNX_OPS_TO_QUANTIZED_IMPL, PostTrainingOptions, QuantizedModule
from ..quantization.builder import ModuleBuilder
from ..quantization.rounding import RoundingPlan
from ..quantization.values import ClearInput, Constant
from .evaluate import can_evaluate, evaluate_node


class UnsupportedOperatorError(ValueError):
    """The graph holds an ONNX operator that no class of the op registry translates."""

    def __init__(self, op_type: str, node_name: str, supported):
        super().__init__(
            f"Unsupported ONNX operator {op_type!r} (node {node_name!r}). "
            f"Supported: {', '.join(sorted(supported))}."
        )
        self.op_type = op_type


def import_onnx(
    model: onnx.ModelProto,
    post_training: PostTrainingOptions | None = None,
    rounding_threshold_bits: int | str | None = None,
    rounding_plan: RoundingPlan | None = None,
    client_stages: tuple = (),
) -> QuantizedModule:
    """Translate an ONNX (or QONNX) graph; ``post_training`` quantizes a float graph.

    The rounding before each lookup is either chosen from the certified ranges
    (``rounding_threshold_bits``) or the one the network trained with (``rounding_plan``, see
    ModuleBuilder). The circuit's program is then chosen ("auto": layered or tabulated,
    whichever costs less). ``client_stages`` run on the client after the output's
    dequantization (networks averaged in one circuit: stages.BlockMean).
    """
    builder = ModuleBuilder(post_training, rounding_threshold_bits, rounding_plan)
    input_shape, output = _walk(model, builder)
    output = builder.finish(output)
    if builder.input_quantizer is None:
        raise ValueError("The graph never quantizes its input.")
    if not builder.layers:
        raise ValueError("The graph has no linear layer to run encrypted.")
    layered = QuantizedModule(
        input_shape,
        builder.input_value.preprocessing,
        builder.input_quantizer,
        builder.steps,
        output.stages + tuple(client_stages),
        builder.layers,
    )
    return layered.with_program("auto")


def _attribute(attribute: onnx.AttributeProto):
    """The attribute's value; a tensor (a Constant node's) as a numpy array, so the op
    classes never read ONNX protobufs."""
    value = onnx.helper.get_attribute_value(attribute)
    return numpy_helper.to_array(value) if isinstance(value, onnx.TensorProto) else value


def _fold(node: onnx.NodeProto, inputs: list, registry) -> Constant:
    """A node of no registered op on constants only (shape arithmetic, such as the
    ConstantOfShape / Slice / Cast subgraph torch writes for a Pad's widths), folded by the
    float evaluator; UnsupportedOperatorError for anything else."""
    constants = [value for value in inputs if value is not None]
    if not can_evaluate(node.op_type) or not all(isinstance(v, Constant) for v in constants):
        raise UnsupportedOperatorError(node.op_type, node.name, registry)
    values = [None if value is None else value.value for value in inputs]
    return Constant(np.asarray(evaluate_node(node, values, on_data=False), dtype=np.float64))


def _walk(model: onnx.ModelProto, builder: ModuleBuilder):
    """Translate every node in order; returns the data input's shape (one row) and the
    value of the graph's output."""
    graph = model.graph
    values: dict[str, object] = {
        init.name: Constant(numpy_helper.to_array(init).astype(np.float64))
        for init in graph.initializer
    }
    data_inputs = [inp for inp in graph.input if inp.name not in values]
    if len(data_inputs) != 1 or len(graph.output) != 1:
        raise ValueError("Only graphs with one data input and one output are supported.")
    dims = data_inputs[0].type.tensor_type.shape.dim
    input_shape = tuple(d.dim_value for d in dims[1:])
    values[data_inputs[0].name] = ClearInput(input_shape)
    registry = ONNX_OPS_TO_QUANTIZED_IMPL
    for node in graph.node:
        inputs = [values[name] if name else None for name in node.input]
        if node.op_type not in registry:
            values[node.output[0]] = _fold(node, inputs, registry)
            continue
        op = registry[node.op_type]({a.name: _attribute(a) for a in node.attribute})
        values[node.output[0]] = op.apply(builder, inputs, list(node.input), node.name)
    return input_shape, values[graph.output[0].name]
