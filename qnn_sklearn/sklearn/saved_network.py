"""The network of a saved estimator, read without trusting what the file declares.

Before anything is allocated, the widths, the number of layers and the bit widths that the
manifest declares are bounded; each tensor's ``.npy`` header (dtype, shape) is checked against
those widths and against the bytes its member really holds before the data is read. Once the
network is rebuilt, the rounding plan its weights make must be the one saved beside them.
"""

from __future__ import annotations

import inspect
import io
import zipfile
from collections.abc import Mapping

import numpy as np
import torch

from .. import safe_zip
from ..quantization.rounding import RoundingPlan
from ..torch.network import SparseQuantNeuralNetwork, layer_widths

MAX_LAYERS = 64
"""Most linear layers a loaded network may declare."""

MAX_NETWORK_WEIGHTS = 2**24
"""Most weights a loaded network may declare (64 MiB of float32), far beyond what FHE runs."""

_ARRAY_DTYPE_KINDS = "biuf"
"""What a state_dict holds: booleans (masks), integers and floats; never objects."""

_MAX_ITEMSIZE = 16
"""Bytes of the widest number a ``.npy`` of kind ``_ARRAY_DTYPE_KINDS`` holds."""

_NPY_HEADER_BYTES = 10_012
"""Longest ``.npy`` preamble numpy reads: magic, length and a header of ``max_header_size``."""

_BIT_WIDTHS = ("n_w_bits", "n_a_bits", "n_accum_bits", "n_input_bits", "rounding_threshold_bits")


def network_widths(kwargs: Mapping, where: str, n_networks: int = 1) -> list[int]:
    """Widths [inputs, hidden..., outputs] that ``SparseQuantNeuralNetwork(**kwargs)`` would
    allocate, refused with ``ValueError`` past :data:`MAX_LAYERS`, :data:`MAX_NETWORK_WEIGHTS`
    (over all ``n_networks`` such networks, averaged) and ``safe_zip``'s declared-size limits,
    before anything is allocated."""
    defaults = inspect.signature(SparseQuantNeuralNetwork).parameters

    def declared(name: str, limit: int) -> int:
        value = kwargs.get(name, defaults[name].default)
        return safe_zip.declared_int(value, f"{where}: {name}", limit)

    input_dim = declared("input_dim", safe_zip.MAX_DECLARED_WIDTH)
    n_outputs = declared("n_outputs", safe_zip.MAX_DECLARED_WIDTH)
    n_layers = declared("n_layers", MAX_LAYERS)
    multiplier = declared("n_hidden_neurons_multiplier", safe_zip.MAX_DECLARED_WIDTH)
    for name in _BIT_WIDTHS:
        if isinstance(kwargs.get(name, defaults[name].default), int):
            declared(name, safe_zip.MAX_DECLARED_BITS)
    hidden = input_dim * multiplier
    if n_layers > 1 and hidden > safe_zip.MAX_DECLARED_WIDTH:
        raise ValueError(
            f"{where}: input_dim * n_hidden_neurons_multiplier = {hidden} hidden neurons, over "
            f"the limit of {safe_zip.MAX_DECLARED_WIDTH} (qnn_sklearn.safe_zip.MAX_DECLARED_WIDTH)."
        )
    widths = layer_widths(input_dim, n_layers, n_outputs, multiplier)
    n_weights = n_networks * sum(a * b for a, b in zip(widths[:-1], widths[1:]))
    if n_weights > MAX_NETWORK_WEIGHTS:
        raise ValueError(
            f"{where}: {n_networks} network(s) of widths {widths} make {n_weights} weights, "
            f"over the limit of {MAX_NETWORK_WEIGHTS} "
            "(qnn_sklearn.sklearn.saved_network.MAX_NETWORK_WEIGHTS)."
        )
    return widths


def checked_widths(hidden_widths, full_widths: list[int]) -> list[int]:
    """The saved (pruned) widths, each at most the width the network is built with."""
    n_hidden = len(full_widths) - 2
    if not isinstance(hidden_widths, list) or len(hidden_widths) != n_hidden:
        raise ValueError(f"network.hidden_widths must be a list of {n_hidden} widths.")
    for index, (width, full) in enumerate(zip(hidden_widths, full_widths[1:-1])):
        # at most the width the network is built with: input_dim * n_hidden_neurons_multiplier
        safe_zip.declared_int(width, f"network.hidden_widths[{index}]", full)
    return [full_widths[0], *hidden_widths, full_widths[-1]]


def saved_rounding_plan(data, widths: list[int]) -> RoundingPlan | None:
    """The plan ``network.rounding_plan`` declares: null, or ``{"lsbs": [...]}`` with one
    integer in ``[0, MAX_DECLARED_BITS]`` per hidden layer of a network of ``widths``."""
    if data is None:
        return None
    n_hidden = len(widths) - 2
    lsbs = data.get("lsbs") if isinstance(data, dict) else None
    if not isinstance(lsbs, list) or len(lsbs) != n_hidden or set(data) != {"lsbs"}:
        raise ValueError(
            f'network.rounding_plan must be null or {{"lsbs": a list of {n_hidden} integers}}.'
        )
    limit = safe_zip.MAX_DECLARED_BITS  # a layer removes at most its accumulator's bits
    for index, bits in enumerate(lsbs):
        if isinstance(bits, bool) or not isinstance(bits, int) or not 0 <= bits <= limit:
            raise ValueError(
                f"network.rounding_plan.lsbs[{index}] must be an integer in [0, {limit}], "
                f"got {str(bits)[:100]}."
            )
    return RoundingPlan(tuple(lsbs))


def check_rounding_plan(saved: RoundingPlan | None, network: SparseQuantNeuralNetwork) -> None:
    """``ValueError`` unless ``network``'s weights make the plan ``saved`` with them: the
    integer model is imported again with the plan of the loaded weights, so a different one
    means the weights, the bit widths or the plan were changed after ``dump``."""
    made = network.rounding_plan()
    if made != saved:
        raise ValueError(
            f"network.rounding_plan: the file says {saved}, but its weights and settings make "
            f"{made}. The file is corrupted or inconsistent; dump the estimator again."
        )


def read_state(archive: zipfile.ZipFile, spec, widths: list[int]) -> dict[str, torch.Tensor]:
    """The tensors of ``network.state``; no member is read that declares more bytes than the
    network's tensors can take, and each ``.npy`` header is checked before its data is used.
    """
    if not isinstance(spec, dict) or not all(isinstance(path, str) for path in spec.values()):
        raise ValueError("network.state must map tensor names to member names.")
    safe_zip.require_members(archive, spec.values(), "This file", "dump")
    pairs = list(zip(widths[:-1], widths[1:]))
    largest_dim = max(widths)
    largest_size = max(a * b for a, b in pairs)
    # weights twice (a network saved while pruning holds masks too), biases, scalar scales
    n_values = 2 * sum(a * b + b for a, b in pairs) + len(spec)
    budget = n_values * _MAX_ITEMSIZE + len(spec) * _NPY_HEADER_BYTES
    declared = 0
    state = {}
    for name, member in spec.items():
        where = f"network.state[{name!r}] ({member})"
        member_bytes = archive.getinfo(member).file_size
        declared += member_bytes
        if member_bytes > largest_size * _MAX_ITEMSIZE + _NPY_HEADER_BYTES or declared > budget:
            raise ValueError(
                f"{where} declares {member_bytes} bytes, more than the tensors of a network of "
                f"widths {widths} take."
            )
        data = safe_zip.read_member(archive, member)  # enforces that size while inflating
        array = _array_from_npy(data, where, largest_dim, largest_size)
        state[name] = torch.from_numpy(array)
    return state


def _array_from_npy(data: bytes, where: str, largest_dim: int, largest_size: int) -> np.ndarray:
    """A ``.npy`` of plain numbers whose shape fits the network and whose bytes are all there."""
    stream = io.BytesIO(data)
    try:
        major, _ = np.lib.format.read_magic(stream)
        read_header = {
            1: np.lib.format.read_array_header_1_0,
            2: np.lib.format.read_array_header_2_0,
        }.get(major)
        if read_header is None:
            raise ValueError(f".npy format version {major}")
        shape, fortran_order, dtype = read_header(stream)
    except (ValueError, TypeError, SyntaxError) as error:
        raise ValueError(f"{where} is not a .npy array that dump writes ({error}).") from None
    if dtype.kind not in _ARRAY_DTYPE_KINDS or dtype.hasobject or dtype.fields is not None:
        raise ValueError(f"{where} has dtype {dtype}; a network's tensors are plain numbers.")
    size = int(np.prod(shape, dtype=object))
    if len(shape) > 2 or any(dim > largest_dim for dim in shape) or size > largest_size:
        raise ValueError(
            f"{where} declares shape {shape}, larger than the network's widths allow "
            f"(at most 2 axes of at most {largest_dim}, {largest_size} values)."
        )
    available = len(data) - stream.tell()
    if size * dtype.itemsize != available:
        raise ValueError(
            f"{where} declares shape {shape} of {dtype} ({size * dtype.itemsize} bytes) but "
            f"holds {available} bytes."
        )
    flat = np.frombuffer(data, dtype=dtype, count=size, offset=stream.tell())
    return flat.reshape(shape, order="F" if fortran_order else "C").copy()
