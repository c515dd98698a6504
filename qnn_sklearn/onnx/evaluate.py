"""A numpy evaluator of the float ONNX graph, used to calibrate post-training quantizers."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import numpy_helper

from ..quantization.grid import Grid
from ..quantization.linear_maps import conv_matrix, spatial_attributes, windows
from ..quantization.stages import ACTIVATIONS, BINARY_OPERATIONS


def _gemm(a, b, c=None, alpha=1.0, beta=1.0, transA=0, transB=0):
    a = a.T if transA else a
    b = b.T if transB else b
    out = alpha * (a @ b)
    return out if c is None else out + beta * c


def _quant(x, scale, zero_point, bit_width, signed=1, narrow=0, rounding_mode=b"ROUND"):
    grid = Grid(int(bit_width), bool(signed), bool(narrow))
    q = grid.clip(np.rint(x / scale) + zero_point)
    return scale * (q - zero_point)


def _reshape(x, shape, allowzero=0):
    """ONNX Reshape on a batch: the batch axis is kept, a 0 copies the input's dimension."""
    dims = [int(d) for d in shape[1:]]
    if not allowzero:
        dims = [x.shape[i + 1] if d == 0 else d for i, d in enumerate(dims)]
    return x.reshape([x.shape[0], *dims])


def _spatial(x, attributes, kernel=None):
    """The windows of a Conv or pooling node over ``x`` (n, C, *spatial)."""
    n_spatial = x.ndim - 2
    kernel, strides, pads, dilations = spatial_attributes(attributes, n_spatial, kernel)
    return windows(x.shape[2:], kernel, strides, pads, dilations)


def _conv(x, w, b=None, group=1, **attributes):
    _, strides, pads, dilations = spatial_attributes(attributes, x.ndim - 2, w.shape[2:])
    matrix, shape = conv_matrix(w, x.shape[1:], strides, pads, dilations, group)
    out = (x.reshape(len(x), -1) @ matrix.T).reshape(len(x), *shape)
    return out if b is None else out + b.reshape((-1,) + (1,) * (x.ndim - 2))


def _pool(x, reduce, **attributes):
    """Each window's ``reduce`` over (n, C, *spatial); padding reads NaN, which it skips."""
    index, output = _spatial(x, attributes)
    flat = np.concatenate([x.reshape(*x.shape[:2], -1), np.full((*x.shape[:2], 1), np.nan)], 2)
    return reduce(flat[:, :, index], axis=-1).reshape(*x.shape[:2], *output)


def _average_pool(x, count_include_pad=0, **attributes):
    if count_include_pad:
        index, _ = _spatial(x, attributes)
        total = _pool(x, np.nansum, **attributes)
        return total / index.shape[1]
    return _pool(x, np.nanmean, **attributes)


def _batch_norm(x, gain, bias, mean, var, epsilon=1e-5, **_):
    shape = (-1,) + (1,) * (x.ndim - 2)
    multiplier = (gain / np.sqrt(var + epsilon)).reshape(shape)
    return (x - mean.reshape(shape)) * multiplier + bias.reshape(shape)


def _pad(x, pads, value=None, axes=None, mode=b"constant"):
    n = x.ndim
    widths = [(int(pads[i]), int(pads[i + n])) for i in range(n)]
    return np.pad(x, widths, constant_values=0.0 if value is None else float(value))


MAX_CONSTANT_ELEMENTS = 2**20
"""Largest tensor a ConstantOfShape node may ask for (its shape is untrusted input)."""


def _constant_of_shape(shape, value=None):
    shape = tuple(int(d) for d in np.asarray(shape).reshape(-1))
    if any(d < 0 for d in shape) or int(np.prod(shape)) > MAX_CONSTANT_ELEMENTS:
        raise ValueError(
            f"ConstantOfShape asks for a {shape} tensor; at most {MAX_CONSTANT_ELEMENTS} "
            "elements are supported."
        )
    fill = 0.0 if value is None else float(np.asarray(value).reshape(-1)[0])
    return np.full(shape, fill)


def _slice(data, starts, ends, axes=None, steps=None):
    axes = range(len(starts)) if axes is None else axes
    steps = np.ones(len(starts)) if steps is None else steps
    index = [slice(None)] * data.ndim
    for axis, start, end, step in zip(axes, starts, ends, steps):
        end = int(np.clip(end, -(2**62), 2**62))  # ONNX writes "to the end" as ±2⁶³
        index[int(axis)] = slice(int(start), end, int(step))
    return data[tuple(index)]


_INTEGER_TYPES = {
    onnx.TensorProto.INT8,
    onnx.TensorProto.INT16,
    onnx.TensorProto.INT32,
    onnx.TensorProto.INT64,
    onnx.TensorProto.UINT8,
    onnx.TensorProto.UINT16,
    onnx.TensorProto.UINT32,
    onnx.TensorProto.UINT64,
}


def _cast(x, to, saturate=1):
    """Values stay float64; a cast to an integer type truncates, to bool tests for non-zero."""
    if to == onnx.TensorProto.BOOL:
        return (x != 0).astype(np.float64)
    return np.trunc(x) if to in _INTEGER_TYPES else x


_EVALUATORS = {
    "Gemm": _gemm,
    "MatMul": lambda a, b: a @ b,
    **BINARY_OPERATIONS,
    "PRelu": lambda x, slope: np.where(x >= 0, x, slope * x),
    "Quant": _quant,
    "Reshape": _reshape,
    "Flatten": lambda x, axis=1: x.reshape(x.shape[0], -1),
    "Identity": lambda x: x,
    "Dropout": lambda x, *args, **kwargs: x,
    **{op: function for op, function in ACTIVATIONS.items() if op != "Identity"},
    "Conv": _conv,
    "BatchNormalization": _batch_norm,
    "AveragePool": _average_pool,
    "GlobalAveragePool": lambda x: x.mean(axis=tuple(range(2, x.ndim)), keepdims=True),
    "MaxPool": lambda x, **attributes: _pool(x, np.nanmax, **attributes),
    "Pad": _pad,
    "Transpose": lambda x, perm=None: np.transpose(x, perm),
    "Concat": lambda *xs, axis: np.concatenate(xs, axis=axis),
    "Where": lambda condition, a, b: np.where(condition != 0, a, b),
    "ConstantOfShape": _constant_of_shape,
    "Slice": _slice,
    "Cast": _cast,
}


def _attribute(attribute: onnx.AttributeProto):
    """The attribute's value; text as ``str`` (e.g. Gelu's ``approximate``), as the stages
    compare it; a tensor as a numpy array."""
    value = onnx.helper.get_attribute_value(attribute)
    if isinstance(value, onnx.TensorProto):
        return numpy_helper.to_array(value).astype(np.float64)
    return value.decode() if isinstance(value, bytes) else value


def can_evaluate(op_type: str) -> bool:
    """Whether :func:`evaluate_node` knows ``op_type``."""
    return op_type in _EVALUATORS


def _reshape_constant(x, shape, allowzero=0):
    """ONNX Reshape of a constant: every axis as the shape says (no batch axis to keep)."""
    dims = [int(d) for d in shape]
    if not allowzero:
        dims = [x.shape[i] if d == 0 else d for i, d in enumerate(dims)]
    return x.reshape(dims)


def evaluate_node(node: onnx.NodeProto, inputs: list, on_data: bool = True) -> np.ndarray:
    """The node's (first) output in float64; ``inputs`` are arrays, None for absent ones.

    ``on_data``: whether an input depends on the graph's data input, whose batch axis a
    Reshape keeps free. The importer folds constant subgraphs with it (torch writes a Pad's
    widths as one).
    """
    if node.op_type not in _EVALUATORS:
        raise ValueError(f"Unsupported ONNX operator {node.op_type!r} (node {node.name!r}).")
    attributes = {a.name: _attribute(a) for a in node.attribute}
    evaluator = _EVALUATORS[node.op_type]
    if node.op_type == "Reshape" and not on_data:
        evaluator = _reshape_constant
    return evaluator(*inputs, **attributes)


def evaluate_onnx(model: onnx.ModelProto, x: np.ndarray) -> dict[str, np.ndarray]:
    """Run the graph on ``x`` in float64; returns every tensor by name.

    The batch axis is free: shapes recorded at export (batch 1) are not enforced.
    """
    graph = model.graph
    values = {
        init.name: numpy_helper.to_array(init).astype(np.float64) for init in graph.initializer
    }
    (data_input,) = [inp for inp in graph.input if inp.name not in values]
    values[data_input.name] = np.asarray(x, dtype=np.float64)
    on_data = {data_input.name}  # the tensors that depend on the data input
    for node in graph.node:
        if node.op_type == "Constant":
            values[node.output[0]] = numpy_helper.to_array(node.attribute[0].t).astype(np.float64)
            continue
        inputs = [values[name] if name else None for name in node.input]  # "": input absent
        data = any(name in on_data for name in node.input)
        if data:
            on_data.add(node.output[0])
        values[node.output[0]] = evaluate_node(node, inputs, data)
    return values
