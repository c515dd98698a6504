"""linear_maps.py: the unrolled Conv and pooling matrices against torch, and the size limits
on untrusted ONNX attributes."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from qnn_sklearn.quantization.linear_maps import (
    MAX_MAP_ENTRIES,
    MAX_WINDOW_ATTRIBUTE,
    conv_matrix,
    pooling_matrix,
    spatial_attributes,
    windows,
)

SETTINGS = settings(deadline=None, max_examples=25)


@st.composite
def conv_cases(draw):
    """A 1-D or 2-D convolution: shapes, groups, strides, pads, dilations."""
    n_spatial = draw(st.integers(1, 2))
    groups = draw(st.integers(1, 2))
    c_in = groups * draw(st.integers(1, 2))
    c_out = groups * draw(st.integers(1, 2))
    kernel = draw(st.lists(st.integers(1, 3), min_size=n_spatial, max_size=n_spatial))
    spatial = draw(st.lists(st.integers(3, 7), min_size=n_spatial, max_size=n_spatial))
    strides = draw(st.lists(st.integers(1, 2), min_size=n_spatial, max_size=n_spatial))
    dilations = draw(st.lists(st.integers(1, 2), min_size=n_spatial, max_size=n_spatial))
    pads = draw(st.lists(st.integers(0, 2), min_size=2 * n_spatial, max_size=2 * n_spatial))
    seed = draw(st.integers(0, 2**16))
    return c_in, c_out, groups, kernel, spatial, strides, pads, dilations, seed


def torch_padding(pads, n_spatial):
    """ONNX (begin..., end...) pads as torch.nn.functional.pad's (last axis first) list."""
    widths = []
    for axis in reversed(range(n_spatial)):
        widths += [pads[axis], pads[axis + n_spatial]]
    return widths


@given(conv_cases())
@SETTINGS
def test_conv_matrix_equals_torch_conv(case):
    c_in, c_out, groups, kernel, spatial, strides, pads, dilations, seed = case
    n = len(spatial)
    extent = [d * (k - 1) + 1 for d, k in zip(dilations, kernel)]
    assume(all(s + pads[i] + pads[i + n] >= e for i, (s, e) in enumerate(zip(spatial, extent))))
    rng = np.random.default_rng(seed)
    weight = rng.integers(-4, 4, size=(c_out, c_in // groups, *kernel))
    x = rng.integers(-4, 4, size=(3, c_in, *spatial))
    attributes = {"strides": strides, "pads": pads, "dilations": dilations}
    _, st_, pd, dl = spatial_attributes(attributes, n, tuple(kernel))
    matrix, shape = conv_matrix(weight, (c_in, *spatial), st_, pd, dl, groups)
    out = (x.reshape(3, -1) @ matrix.T).reshape(3, *shape)
    conv = torch.nn.functional.conv1d if n == 1 else torch.nn.functional.conv2d
    padded = torch.nn.functional.pad(torch.tensor(x, dtype=torch.float64), torch_padding(pads, n))
    reference = conv(
        padded, torch.tensor(weight, dtype=torch.float64), None, strides, 0, dilations, groups
    )
    np.testing.assert_array_equal(out, reference.numpy().astype(np.int64))


@given(
    kernel=st.integers(1, 3),
    stride=st.integers(1, 3),
    pad=st.integers(0, 1),
    size=st.integers(3, 7),
    seed=st.integers(0, 2**16),
)
@SETTINGS
def test_pooling_windows_equal_torch_pools(kernel, stride, pad, size, seed):
    assume(pad <= kernel // 2)
    x = np.random.default_rng(seed).integers(-8, 8, size=(2, 3, size, size)).astype(np.float64)
    attributes = {"kernel_shape": (kernel, kernel), "strides": (stride, stride)}
    attributes["pads"] = (pad,) * 4
    k, s, p, d = spatial_attributes(attributes, 2)
    index, output = windows((size, size), k, s, p, d)
    sums = (x.reshape(2, -1) @ pooling_matrix((3, size, size), index).T).reshape(2, 3, *output)
    tensor = torch.tensor(x)
    average = torch.nn.functional.avg_pool2d(tensor, kernel, stride, pad, count_include_pad=True)
    np.testing.assert_allclose(sums / kernel**2, average.numpy(), atol=1e-12)
    padded = np.concatenate([x.reshape(2, 3, -1), np.full((2, 3, 1), -np.inf)], axis=2)
    maxima = padded[:, :, index].max(axis=-1).reshape(2, 3, *output)
    reference = torch.nn.functional.max_pool2d(tensor, kernel, stride, pad).numpy()
    np.testing.assert_array_equal(maxima, reference)


@pytest.mark.parametrize(
    "attributes, message",
    [
        ({"kernel_shape": (MAX_WINDOW_ATTRIBUTE + 1, 1)}, "kernel_shape"),
        ({"kernel_shape": (2, 2), "pads": (0, 10**9, 0, 0)}, "pads"),
        ({"kernel_shape": (2, 2), "strides": (0, 1)}, "strides"),
        ({"kernel_shape": (2, 2), "dilations": (-1, 1)}, "dilations"),
        ({"kernel_shape": (2, 2), "auto_pad": b"SAME_UPPER"}, "auto_pad"),
        ({"kernel_shape": (2, 2), "ceil_mode": 1}, "ceil_mode"),
        ({"kernel_shape": (2,)}, "spatial axes"),
    ],
)
def test_untrusted_attributes_are_refused_by_name(attributes, message):
    with pytest.raises(ValueError, match=message):
        spatial_attributes(attributes, 2, node_name="node")


def test_a_matrix_past_the_limit_is_refused_before_allocation():
    """A 1-channel 3×3 convolution of a 2048×2048 input with 1 output channel would need a
    4·10⁶ × 4·10⁶ matrix; refused by name, without allocating it."""
    side = 2048
    assert (side * side) ** 2 > MAX_MAP_ENTRIES
    weight = np.ones((1, 1, 3, 3), dtype=np.int64)
    k, s, p, d = spatial_attributes({"pads": (1, 1, 1, 1)}, 2, (3, 3))
    with pytest.raises(ValueError, match="unrolling it needs"):
        conv_matrix(weight, (1, side, side), s, p, d, 1, "big")


def test_a_window_larger_than_the_input_is_refused():
    k, s, p, d = spatial_attributes({"kernel_shape": (5, 5)}, 2)
    with pytest.raises(ValueError, match="does not fit"):
        windows((3, 3), k, s, p, d, "small")
