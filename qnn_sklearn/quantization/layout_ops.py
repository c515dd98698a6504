"""Pad, Transpose and Concat: ops that move features around (and pad them with a constant)."""

from __future__ import annotations

import numpy as np

from .linear_maps import MAX_WINDOW_ATTRIBUTE, check_map_size
from .op_base import QuantizedOp, float_value, require
from .values import ClearInput, Constant, Encrypted


class QuantizedPad(QuantizedOp):
    """Pad in ``constant`` mode, on the features (never the batch axis), up to
    :data:`~.linear_maps.MAX_WINDOW_ATTRIBUTE` per side.

    On an encrypted tensor it is a LinearStep: a 0/1 matrix copies the features, and the pad
    value is added as a constant, which must be a level of the input's grid (0 always is,
    since every grid holds 0 exactly). The clear input is quantized first (post-training), so
    the client's pre-processing stays what a deployed model can describe.
    """

    op_type = "Pad"
    quantizes_input = True

    def _widths(self, inputs, node_name, feature_ndim: int):
        mode = self.attributes.get("mode", "constant")
        mode = mode.decode() if isinstance(mode, bytes) else mode
        require(mode == "constant", f"{node_name}: Pad mode {mode!r} is not supported.")
        require(len(inputs) < 4 or inputs[3] is None, f"{node_name}: Pad axes not supported.")
        pads = float_value(inputs[1], f"{node_name}: the pads").astype(np.int64).reshape(-1)
        rank = feature_ndim + 1
        require(len(pads) == 2 * rank, f"{node_name}: {len(pads)} pads for rank {rank}.")
        require(
            pads[0] == 0
            and pads[rank] == 0
            and np.all(pads >= 0)
            and np.all(pads <= MAX_WINDOW_ATTRIBUTE),
            f"{node_name}: pads {pads.tolist()} must be in [0, {MAX_WINDOW_ATTRIBUTE}] and "
            "leave the batch axis alone.",
        )
        value = 0.0
        if len(inputs) > 2 and inputs[2] is not None:
            value = float(float_value(inputs[2], f"{node_name}: the pad value").reshape(-1)[0])
        return list(zip(pads[1:rank], pads[rank + 1 :])), value

    def apply(self, builder, inputs, names, node_name):
        if isinstance(inputs[0], ClearInput):
            inputs = [builder.ensure_quantized(inputs[0], names[0], node_name), *inputs[1:]]
        return super().apply(builder, inputs, names, node_name)

    def on_constant(self, x, inputs, node_name):
        widths, value = self._widths(inputs, node_name, np.ndim(x.value) - 1)
        return Constant(np.pad(x.value, [(0, 0), *widths], constant_values=value))

    def on_encrypted(self, builder, x, inputs, node_name):
        widths, value = self._widths(inputs, node_name, len(x.feature_shape))
        level = value / x.grid.scale
        require(
            abs(level - round(level)) <= 1e-6 * max(1.0, abs(level)),
            f"{node_name}: the pad value {value} is not a level of the input's grid (step "
            f"{x.grid.scale}); pad with 0.",
        )
        source = np.pad(np.arange(x.span.size).reshape(x.feature_shape), widths, constant_values=-1)
        inside = source.reshape(-1) >= 0
        check_map_size(source.size, x.span.size, node_name)
        matrix = np.zeros((source.size, x.span.size), dtype=np.int64)
        matrix[np.flatnonzero(inside), source.reshape(-1)[inside]] = 1
        constant = np.where(inside, 0, int(round(level)))
        return builder.add_linear(
            x, matrix, node_name, output_shape=source.shape, constant=constant
        )


class QuantizedTranspose(QuantizedOp):
    """Transpose of the feature axes (the batch axis stays first): a gather, no arithmetic."""

    op_type = "Transpose"
    quantizes_input = True

    def _permutation(self, feature_ndim: int, node_name: str) -> tuple[int, ...]:
        perm = tuple(self.attributes.get("perm", range(feature_ndim, -1, -1)))
        require(
            sorted(perm) == list(range(feature_ndim + 1)) and perm[0] == 0,
            f"{node_name}: perm {list(perm)} must keep the batch axis first.",
        )
        return tuple(p - 1 for p in perm[1:])

    def on_constant(self, x, inputs, node_name):
        perm = self.attributes.get("perm", range(np.ndim(x.value) - 1, -1, -1))
        return Constant(np.transpose(x.value, perm))

    def on_encrypted(self, builder, x, inputs, node_name):
        perm = self._permutation(len(x.feature_shape), node_name)
        index = np.arange(x.span.size).reshape(x.feature_shape).transpose(perm)
        return builder.add_gather([x], index, index.shape, node_name)


class QuantizedConcat(QuantizedOp):
    """Concat of encrypted tensors along a feature axis: a gather over all inputs, which are
    brought to one grid first (see ``ModuleBuilder.common_grid``)."""

    op_type = "Concat"

    def apply(self, builder, inputs, names, node_name):
        if all(isinstance(value, Constant) for value in inputs):
            axis = self.attributes.get("axis", 0)
            return Constant(np.concatenate([value.value for value in inputs], axis=axis))
        require(
            all(isinstance(value, (Encrypted, ClearInput)) for value in inputs),
            f"{node_name}: Concat of encrypted tensors with constants is not supported.",
        )
        # networks averaged in one circuit (torch/averaged.py) end in a Concat of their
        # outputs, each on its own network's scale: the client dequantizes each block
        views = builder.post_training is None and all(
            isinstance(value, Encrypted) and value.grid is None for value in inputs
        )
        values = list(inputs)
        if not views:
            values = builder.common_grid(values, list(names), node_name)
        ndim = len(values[0].feature_shape) + 1
        axis = self.attributes.get("axis", 1)
        axis = axis + ndim if axis < 0 else axis
        require(1 <= axis < ndim, f"{node_name}: Concat along the batch axis is not supported.")
        start, pieces = 0, []
        for value in values:
            pieces.append(start + np.arange(value.span.size).reshape(value.feature_shape))
            start += value.span.size
        try:
            index = np.concatenate(pieces, axis=axis - 1)
        except ValueError as error:
            raise ValueError(f"{node_name}: shapes do not concatenate: {error}") from error
        if views:
            return builder.add_view_gather(values, index, node_name)
        return builder.add_gather(values, index, index.shape, node_name)
