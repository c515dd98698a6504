"""Convolution, pooling and padding as matrices over a row's flattened (C, *spatial) features.

Each of these ops is a linear map of the features, so the builder runs it as one LinearStep
whose certified bounds come from the same exact interval arithmetic as a dense layer's
(``bounds.accumulator_range``): no special case per op, and the bounds are exact per output
position (border positions see fewer inputs).

Why a matrix and not concrete-python's native ``fhe.conv``: in concrete-python 2.11 its
``FHELinalg.conv2d`` refuses padding ("padding isn't yet supported"), and the leveled cost is
close either way. Measured on a 3×3 convolution, 1 → 4 channels on an 8×8 input (no padding
so that both compile; 144 outputs, 2 cores shared with other jobs): compile 0.27 s unrolled
vs 0.61 s native, run 17.8 ms vs 12.9 ms, the same optimizer complexity; one 9-bit lookup
costs about a second on that machine, so a CNN's time is its lookups, not its convolutions.

Sizes are bounded before anything is allocated: ONNX attributes are untrusted input.
"""

from __future__ import annotations

import numpy as np

from .op_base import require

MAX_MAP_ENTRIES = 2**23
"""Largest matrix (outputs × inputs) an op may unroll: 64 MiB of int64."""

MAX_WINDOW_ATTRIBUTE = 64
"""Largest kernel size, stride, dilation or padding per axis an op may ask for."""


def spatial_attributes(attributes: dict, n_spatial: int, kernel=None, node_name: str = ""):
    """``(kernel, strides, pads, dilations)`` of a Conv or pooling node, checked and bounded.

    ``pads`` lists the begin pads then the end pads, as ONNX does. Only explicit padding
    (``auto_pad`` NOTSET or VALID) and ``ceil_mode = 0`` are supported.
    """
    auto_pad = attributes.get("auto_pad", "NOTSET")
    auto_pad = auto_pad.decode() if isinstance(auto_pad, bytes) else auto_pad
    require(
        auto_pad in ("NOTSET", "VALID"),
        f"{node_name}: auto_pad={auto_pad} is not supported; export with explicit padding.",
    )
    require(not attributes.get("ceil_mode", 0), f"{node_name}: ceil_mode=1 is not supported.")
    kernel = tuple(attributes.get("kernel_shape", kernel or ()))
    strides = tuple(attributes.get("strides", (1,) * n_spatial))
    dilations = tuple(attributes.get("dilations", (1,) * n_spatial))
    pads = (0,) * 2 * n_spatial if auto_pad == "VALID" else tuple(attributes.get("pads", ()))
    pads = pads or (0,) * 2 * n_spatial
    require(
        len(kernel) == len(strides) == len(dilations) == n_spatial and len(pads) == 2 * n_spatial,
        f"{node_name}: kernel, strides, dilations and pads must cover the {n_spatial} "
        "spatial axes.",
    )
    for name, values, low in (
        ("kernel_shape", kernel, 1),
        ("strides", strides, 1),
        ("dilations", dilations, 1),
        ("pads", pads, 0),
    ):
        require(
            all(low <= int(v) <= MAX_WINDOW_ATTRIBUTE for v in values),
            f"{node_name}: {name}={list(values)} outside [{low}, {MAX_WINDOW_ATTRIBUTE}].",
        )
    return tuple(np.asarray(v, dtype=np.int64) for v in (kernel, strides, pads, dilations))


def windows(spatial, kernel, strides, pads, dilations, node_name: str = ""):
    """``(index, output_spatial)``: ``index[p, k]`` is the flat spatial position that kernel
    element ``k`` of output position ``p`` reads, or −1 where it reads padding."""
    spatial = np.asarray(spatial, dtype=np.int64)
    n = len(spatial)
    extent = dilations * (kernel - 1) + 1
    output = (spatial + pads[:n] + pads[n:] - extent) // strides + 1
    require(
        np.all(output >= 1),
        f"{node_name}: the window {kernel.tolist()} does not fit the input {spatial.tolist()}.",
    )
    out_positions = np.indices(output).reshape(n, -1)
    kernel_positions = np.indices(kernel).reshape(n, -1)
    coordinates = (
        out_positions[:, :, None] * strides[:, None, None]
        - pads[:n, None, None]
        + kernel_positions[:, None, :] * dilations[:, None, None]
    )
    valid = np.all((coordinates >= 0) & (coordinates < spatial[:, None, None]), axis=0)
    clipped = np.clip(coordinates, 0, (spatial - 1)[:, None, None])
    flat = np.ravel_multi_index(tuple(clipped), tuple(spatial))
    return np.where(valid, flat, -1), tuple(int(d) for d in output)


def check_map_size(n_out: int, n_in: int, node_name: str) -> None:
    """ValueError before allocating a matrix larger than :data:`MAX_MAP_ENTRIES`."""
    require(
        n_out * n_in <= MAX_MAP_ENTRIES,
        f"{node_name}: unrolling it needs a {n_out} × {n_in} matrix, more than "
        f"{MAX_MAP_ENTRIES} entries; use a smaller input, fewer channels or a larger stride.",
    )


def conv_matrix(
    weight: np.ndarray, input_shape, strides, pads, dilations, groups: int, node_name: str = ""
):
    """``(matrix, output_shape)`` of an ONNX Conv: ``matrix @ x.ravel()`` is the convolution
    of one row ``x`` of shape ``input_shape = (C_in, *spatial)``, without bias.

    ``weight`` has shape ``(C_out, C_in / groups, *kernel)``, of any numeric type (the
    integer weights of the circuit, or the float weights of the calibration graph).
    """
    c_out, c_group = weight.shape[:2]
    c_in, spatial = input_shape[0], tuple(input_shape[1:])
    require(
        groups >= 1 and c_in == c_group * groups and c_out % groups == 0,
        f"{node_name}: {c_in} input channels do not match weight {weight.shape} and "
        f"group={groups}.",
    )
    index, output = windows(
        spatial, np.asarray(weight.shape[2:]), strides, pads, dilations, node_name
    )
    n_positions, n_spatial = index.shape[0], int(np.prod(spatial))
    check_map_size(c_out * n_positions, c_in * n_spatial, node_name)
    matrix = np.zeros((c_out, n_positions, c_in * n_spatial), dtype=weight.dtype)
    kernel = weight.reshape(c_out, c_group, -1)
    positions, taps = np.nonzero(index >= 0)
    per_group = c_out // groups
    for o in range(c_out):
        for local in range(c_group):
            channel = (o // per_group) * c_group + local
            columns = channel * n_spatial + index[positions, taps]
            matrix[o, positions, columns] += kernel[o, local, taps]
    return matrix.reshape(c_out * n_positions, -1), (c_out, *output)


def pooling_matrix(input_shape, index: np.ndarray, node_name: str = ""):
    """The 0/1 matrix that sums each channel's window ``index`` (from :func:`windows`)."""
    channels, n_spatial = input_shape[0], int(np.prod(input_shape[1:]))
    n_positions = index.shape[0]
    check_map_size(channels * n_positions, channels * n_spatial, node_name)
    matrix = np.zeros((channels, n_positions, channels * n_spatial), dtype=np.int64)
    positions, taps = np.nonzero(index >= 0)
    for c in range(channels):
        matrix[c, positions, c * n_spatial + index[positions, taps]] = 1
    return matrix.reshape(channels * n_positions, -1)
