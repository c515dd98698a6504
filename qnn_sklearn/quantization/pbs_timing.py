"""Timing bootstraps on this machine: the measuring method of the per-machine cost table.

One circuit applies a table lookup (a non-trivial permutation, so it is not simplified away)
to ``n_values`` encrypted values, optionally after an exact ``round_bit_pattern`` that removes
``lsbs_to_remove`` low bits first; we compile it at the library's default ``p_error``, make its
keys, then time ``circuit.run`` after one warm-up run. concrete-python spreads the lookups of
one tensor over the cores, so the time of a wide tensor divided by its width is what one PBS
costs when every core is busy.

``benchmarks/pbs_floor.py`` (the floor of every benchmark table: bare lookups, server side)
and :func:`measure_machine_costs` (the table the model search prices candidates with: lookups
behind a dot product, encryption to decryption) both time circuits with :func:`time_lookups`,
so the two cannot drift apart.
"""

from __future__ import annotations

import os
import statistics
import time
from collections.abc import Callable, Iterable

import numpy as np

from ..fhe_runtime import fhe
from .compile_options import DEFAULT_P_ERROR
from .machine_costs import (
    MachineCosts,
    cache_path,
    machine_key,
    read_machine_costs,
    write_machine_costs,
)


def wide_values(precision: int) -> int:
    """Lookups in the wide circuit of :func:`measure_machine_costs`: 64 up to 4 bits, halved
    per bit above, at least 16 (8 per core on 2 cores). Enough lookups that their time stands
    well above a loaded machine's noise on the call's fixed cost; few enough that the 7-bit
    circuit runs in seconds."""
    return max(16, 64 >> max(precision - 4, 0))


ROUNDING_CASE = (5, 3)
"""(kept bits, removed bits) of the rounded layer that prices one removed bit: an 8-bit
accumulator (the default ``n_accum_bits`` on up to 24 features) rounded to 5 bits, what
``"auto"`` keeps at the default 3-bit activations (``n_a_bits + 2``); (4, 4) was the older
default's shape."""

LAYER_FAN_IN = 8
"""Inputs of the dot product before the rounding in the table's rounded layer (as in
benchmarks/rounding_cost.py, whose layers it follows)."""


def cores() -> int:
    """Cores this process may use."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - non-Linux
        return os.cpu_count() or 1


def _layer_weights(fan_in: int, n_values: int, acc_bits: int, lsbs: int) -> np.ndarray:
    """Non-negative (fan_in, n_values) weights on 3-bit inputs: the largest accumulator (all
    inputs 7) nearly fills ``acc_bits`` bits, and rounding it up cannot overflow them."""
    rng = np.random.default_rng(acc_bits)
    total = (2**acc_bits - 1 - (1 << lsbs) // 2) // 7
    return rng.multinomial(total, np.ones(fan_in) / fan_in, size=n_values).T


def _following_weights(n_values: int, fan_in: int) -> np.ndarray:
    """(n_values, n_values) 0/1 weights: output j sums the ``fan_in`` lookups j, j+1, ...
    (cyclically), so it stays within the lookups' bits times ``fan_in``."""
    rows = np.arange(n_values)[:, None]
    return ((rows - np.arange(n_values)[None, :]) % n_values < fan_in).astype(np.int64)


def time_lookups(
    precision: int,
    n_values: int,
    runs: int,
    lsbs_to_remove: int = 0,
    p_error=DEFAULT_P_ERROR,
    fan_in: int = 0,
    round_trip: bool = False,
) -> dict:
    """Compile, keygen and time one circuit of ``n_values`` lookups at ``precision`` bits.

    With ``fan_in``, each lookup (or its rounding) reads the accumulator of a leveled dot
    product of ``fan_in`` 3-bit inputs whose largest value fills ``precision +
    lsbs_to_remove`` bits, as a neuron of our layers does, and the lookups feed the next
    layer's dot product (each output the sum of ``fan_in`` of them, within the same bits), as
    a hidden layer's do: the noise that product adds to the lookups' outputs is what makes
    concrete choose the larger parameters that hidden layers pay. ``precision == 0`` times a
    circuit without any bootstrap (``x + 1``): the fixed cost of a call. ``round_trip`` times
    encryption, run and decryption (what one row costs its user) instead of the server's run
    alone. Returns the median and every run in seconds, compile and keygen times, the PBS
    count, key sizes, and whether the decrypted result equals the function evaluated in the
    clear.
    """
    size, unit, acc_bits = 2**precision, 2**lsbs_to_remove, precision + lsbs_to_remove
    weight = _layer_weights(fan_in, n_values, acc_bits, lsbs_to_remove) if fan_in else None
    following = _following_weights(n_values, fan_in) if fan_in else None

    def circuit_function(x):
        if precision == 0:
            return x + 1
        if weight is not None:
            x = fhe.hint(x @ weight, bit_width=acc_bits)
        if lsbs_to_remove:
            x = fhe.round_bit_pattern(x, lsbs_to_remove=lsbs_to_remove, overflow_protection=False)
        looked_up = fhe.univariate(lambda v: (3 * (v // unit) + 1) % size)(x)
        return looked_up if following is None else looked_up @ following

    rng = np.random.default_rng(precision)
    if weight is not None:
        inputset = [np.zeros(fan_in, np.int64), np.full(fan_in, 7)]
        inputset += [rng.integers(0, 8, fan_in) for _ in range(30)]
        x = rng.integers(0, 8, fan_in)
    else:  # multiples of 2**lsbs_to_remove: rounding never carries past the top bit
        levels = max(size, 2)
        inputset = [(np.arange(n_values) % levels) * unit, np.full(n_values, (levels - 1) * unit)]
        x = rng.integers(0, levels, n_values) * unit
    compiler = fhe.Compiler(circuit_function, {"x": "encrypted"})
    start = time.perf_counter()
    circuit = compiler.compile(inputset, fhe.Configuration(p_error=p_error))
    compile_s = time.perf_counter() - start
    start = time.perf_counter()
    circuit.keygen(force=True)
    keygen_s = time.perf_counter() - start

    encrypted = circuit.encrypt(x)
    circuit.run(encrypted)  # warm-up
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        if round_trip:
            result = circuit.run(circuit.encrypt(x))
            circuit.decrypt(result)
        else:
            result = circuit.run(encrypted)
        times.append(time.perf_counter() - start)
    return {
        "precision": precision,
        "n_values": n_values,
        "lsbs_to_remove": lsbs_to_remove,
        "fan_in": fan_in,
        "round_trip": round_trip,
        "pbs_count": int(circuit.programmable_bootstrap_count),
        "runs_s": times,
        "median_s": statistics.median(times),
        "compile_s": compile_s,
        "keygen_s": keygen_s,
        "bootstrap_key_bytes": int(circuit.size_of_bootstrap_keys),
        "keyswitch_key_bytes": int(circuit.size_of_keyswitch_keys),
        "correct": bool(np.array_equal(circuit.decrypt(result), circuit_function(x))),
    }


def measure_machine_costs(
    precisions: Iterable[int] = range(1, 8),
    runs: int = 5,
    progress: Callable[[str], None] | None = None,
) -> MachineCosts:
    """This machine's table: per precision, the time of one PBS and the fixed cost of a call.

    Every circuit is timed from encryption to decryption. Each precision's bare lookup (the
    circuit of ``benchmarks/pbs_floor.py``) is timed on one value and on :func:`wide_values`:
    the slope between the two is one PBS with every core busy (what the lookups of a layer
    cost), the remainder is the call's fixed cost, which grows with the bootstrap key. The
    circuit without lookups gives the fixed cost of a leveled-only circuit.

    A removed bit is priced on a layer: :data:`LAYER_FAN_IN` inputs, a dot product to an
    accumulator of :data:`ROUNDING_CASE`'s bits, the rounding, the lookup, and the next
    layer's dot product on the lookups; its slope per neuron, less one bare lookup, over the
    removed bits. Without that next product, and on the (4, 4) shape, a rounded neuron was
    priced as if its lookup were the circuit's output: the candidates with bootstraps ran
    1.24–1.50× their predictions at load 1–2 (search_latency.py at 8e66b2d; 1.05–1.15 at
    load 6–8), and 0.85–1.18× once priced this way (at 4cc569f). The rounding reads the dot
    product's noise, which makes concrete choose larger parameters than for a bare value
    (measured here: a 6-to-4-bit rounding of bare values cost half as much per bit), while the
    lookup after it reads the rounding's fresh output, as a bare lookup does.

    1..7 bits by default: wider lookups are extrapolated (:meth:`MachineCosts.lookup_at`), as
    the 8-bit keys alone take minutes to make and use. A few minutes on 2 cores.
    """
    report = progress or (lambda message: None)
    precisions = sorted(set(precisions))
    if precisions != list(range(1, len(precisions) + 1)):
        raise ValueError(f"Measure precisions 1..n without gaps; got {precisions}.")
    kept, removed = ROUNDING_CASE
    if kept not in precisions:
        raise ValueError(f"Measure precisions up to {kept} at least (the rounding's lookup).")

    def slope_and_rest(precision: int, n_wide: int, **circuit) -> tuple[float, float]:
        one = time_lookups(precision, 1, runs, round_trip=True, **circuit)
        wide = time_lookups(precision, n_wide, runs, round_trip=True, **circuit)
        if not (one["correct"] and wide["correct"]):
            raise RuntimeError(f"A timing circuit decrypted a wrong result: {one}, {wide}.")
        slope = (wide["median_s"] - one["median_s"]) / (n_wide - 1)
        # a noisy run can make the slope vanish: then the wide circuit's mean per lookup
        slope = slope if slope > 0 else wide["median_s"] / n_wide
        return slope, max(one["median_s"] - slope, 0.0)

    leveled = time_lookups(0, wide_values(0), runs, round_trip=True)
    lookup_s, overhead_s = [], []
    for precision in precisions:
        slope, rest = slope_and_rest(precision, wide_values(precision))
        lookup_s.append(slope)
        overhead_s.append(rest)
        report(f"{precision} bits: {1e3 * slope:.2f} ms per PBS, {1e3 * rest:.1f} ms per call")
    per_neuron, _ = slope_and_rest(
        kept, wide_values(kept), lsbs_to_remove=removed, fan_in=LAYER_FAN_IN
    )
    round_s = max((per_neuron - lookup_s[kept - 1]) / removed, 0.0)
    report(f"rounding: {1e3 * round_s:.2f} ms per removed bit")
    return MachineCosts(
        lookup_s=tuple(lookup_s),
        round_s_per_bit=round_s,
        call_overhead_s=(leveled["median_s"], *overhead_s),
        key=machine_key(),
        load_average=os.getloadavg()[0],
    )


def cached_machine_costs(progress: Callable[[str], None] | None = None) -> MachineCosts:
    """This machine's table: from its cache file (read as untrusted: ValueError if refused),
    else measured now by :func:`measure_machine_costs` and cached."""
    key = machine_key()
    path = cache_path(key)
    if os.path.lexists(path):
        return read_machine_costs(path, expected_key=key)
    if progress is not None:
        progress(f"Measuring this machine's PBS costs once (a few minutes) into {path}")
    costs = measure_machine_costs(progress=progress)
    write_machine_costs(costs, path)
    return costs
