"""Conv and BatchNormalization: the layers of a convolutional network besides pooling."""

from __future__ import annotations

import numpy as np

from .elementwise_ops import QuantizedElementwise
from .linear_maps import conv_matrix, spatial_attributes
from .op_base import QuantizedOp, float_value, require
from .stages import Affine
from .values import ClearInput, Constant, Encrypted
from .weights import integer_weight, per_output_scale


def channel_axis_shape(n_channels: int, feature_ndim: int) -> tuple[int, ...]:
    """Shape that puts a per-channel vector on axis 0 of a row's (C, *spatial) features."""
    return (n_channels,) + (1,) * (feature_ndim - 1)


class QuantizedConv(QuantizedOp):
    """ONNX Conv, 1-D or 2-D (any spatial rank), with stride, padding, dilation and groups.

    Unrolled into one integer matrix over the flattened (C, *spatial) features (see
    linear_maps.py for why, and the measured cost), emitted as a LinearStep with exact
    bounds; the per-output-channel rescale and the float bias ride on its float view, fused
    into the next lookup as a Gemm's are. The output keeps its (C_out, *spatial) shape.
    """

    op_type = "Conv"

    def apply(self, builder, inputs, names, node_name):
        weight, scale = integer_weight(builder, inputs[1], node_name)
        require(weight.ndim >= 3, f"{node_name}: Conv weights need a spatial axis.")
        x = builder.ensure_quantized(inputs[0], names[0], node_name)
        n_spatial = weight.ndim - 2
        require(
            len(x.feature_shape) == n_spatial + 1,
            f"{node_name}: input features {x.feature_shape} are not (C, *spatial) for a "
            f"{n_spatial}-D kernel.",
        )
        _, strides, pads, dilations = spatial_attributes(
            self.attributes, n_spatial, weight.shape[2:], node_name
        )
        matrix, output_shape = conv_matrix(
            weight,
            x.feature_shape,
            strides,
            pads,
            dilations,
            int(self.attributes.get("group", 1)),
            node_name,
        )
        per_channel = channel_axis_shape(weight.shape[0], len(output_shape))
        channel_scale = per_output_scale(scale, node_name).reshape(per_channel)
        bias = None
        if len(inputs) > 2 and inputs[2] is not None:
            bias = float_value(inputs[2], f"{node_name}: the Conv bias").reshape(per_channel)
        return builder.add_linear(
            x, matrix, node_name, output_shape=output_shape, scale=channel_scale, bias=bias
        )


class QuantizedBatchNormalization(QuantizedElementwise):
    """Inference BatchNormalization: ``y = gain · (x − mean) / √(var + ε) + bias`` per channel.

    A per-channel affine stage on the float view. Directly after a Conv or Gemm it merges into
    that layer's own rescale and bias (consecutive affine stages are one), which folds it into
    the layer with no lookup of its own; it is folded into the float rescale, not into the
    integer weights, so a per-tensor weight grid loses nothing to channels of small gain. Else
    it waits in the stages for the next lookup (or the client's dequantization).
    """

    op_type = "BatchNormalization"

    def stage(self, inputs, node_name) -> Affine:
        require(
            not self.attributes.get("training_mode", 0),
            f"{node_name}: BatchNormalization in training mode; export the model in eval().",
        )
        gain, bias, mean, var = (
            float_value(value, f"{node_name}: a BatchNormalization parameter")
            for value in inputs[1:5]
        )
        multiplier = gain / np.sqrt(var + self.attributes.get("epsilon", 1e-5))
        shape = channel_axis_shape(len(multiplier), self._feature_ndim(inputs[0]))
        return Affine(multiplier.reshape(shape), (bias - mean * multiplier).reshape(shape))

    @staticmethod
    def _feature_ndim(x) -> int:
        if isinstance(x, (Encrypted, ClearInput)):
            return len(x.feature_shape)
        require(isinstance(x, Constant), "BatchNormalization of an unknown tensor.")
        return np.ndim(x.value) - 1
