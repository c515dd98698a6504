"""This machine's bootstrap costs in seconds, measured once and cached as JSON.

``cost_model.py`` holds the reference machine's table, whose ratios choose programs and
roundings. A latency in seconds needs this machine's own figures: they change with the CPU, the
cores and concrete-python's version (which picks the cryptographic parameters). They are
measured by :func:`qnn_sklearn.quantization.pbs_timing.measure_machine_costs` (a few
minutes) and cached in the user's cache directory under a name derived from those facts.

A cache file is data from disk, so it is read as untrusted: at most
:data:`MAX_COST_FILE_BYTES`, JSON only (never pickle), every field checked for type, length
and range, and refused unless it names this machine. A refused file raises ValueError naming
it; deleting it makes the next search measure again.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import platform
import stat
import tempfile
from dataclasses import asdict, dataclass
from importlib.metadata import version
from pathlib import Path

from .compile_options import DEFAULT_P_ERROR
from .cost_model import BEYOND_TABLE_FACTOR

FORMAT = 1
"""Version of the cache file's layout."""

MAX_COST_FILE_BYTES = 64 * 2**10
"""Largest cache file read; a table of 16 precisions is under 2 KiB."""

MAX_PRECISION = 16
"""Widest lookup a table may list (concrete-python's widest)."""

MAX_SECONDS = 3600.0
"""Largest time a table may give one PBS or one call; anything above is not a measurement."""

CACHE_DIR_VARIABLE = "QNN_SKLEARN_CACHE_DIR"
"""Environment variable that overrides the cache directory."""

_FIELDS = {"format", "key", "lookup_s", "round_s_per_bit", "call_overhead_s", "load_average"}


@dataclass(frozen=True)
class MachineCosts:
    """Seconds of wall time, with every core of this machine busy.

    Parameters
    ----------
    lookup_s : tuple of float
        One PBS at 1, 2, ... bits.
    round_s_per_bit : float
        One removed bit of an exact rounding (one small PBS per bit and value).
    call_overhead_s : tuple of float
        Fixed cost of one runtime call: ``[0]`` for a circuit without bootstraps, ``[p]`` for
        one whose widest lookup has ``p`` bits (the cost grows with the bootstrap key).
    key : dict
        The machine facts the figures hold for (:func:`machine_key`).
    load_average : float or None
        One-minute load average when measured (figures from a loaded machine are slower).
    """

    lookup_s: tuple[float, ...]
    round_s_per_bit: float
    call_overhead_s: tuple[float, ...]
    key: dict
    load_average: float | None = None

    def lookup_at(self, bits: int) -> float:
        """One PBS at ``bits``; beyond the table, ×``BEYOND_TABLE_FACTOR`` per bit (the
        reference table's measured growth)."""
        if bits <= len(self.lookup_s):
            return self.lookup_s[max(bits, 1) - 1]
        return self.lookup_s[-1] * BEYOND_TABLE_FACTOR ** (bits - len(self.lookup_s))

    def call_overhead_at(self, bits: int) -> float:
        """Fixed cost of a call whose widest lookup has ``bits`` (0: none); the widest
        measured one beyond the table."""
        return self.call_overhead_s[min(max(bits, 0), len(self.call_overhead_s) - 1)]

    def to_json(self) -> dict:
        return {"format": FORMAT, **asdict(self)}

    @classmethod
    def from_json(cls, data) -> MachineCosts:
        """The table ``data`` describes; ValueError naming the first field that is wrong."""
        if not isinstance(data, dict) or set(data) != _FIELDS:
            raise ValueError(f"expected an object with the fields {sorted(_FIELDS)}")
        if data["format"] != FORMAT:
            raise ValueError(f"format {data['format']!r} is not {FORMAT}")
        key = data["key"]
        if (
            not isinstance(key, dict)
            or len(key) > 16
            or not all(
                isinstance(k, str) and isinstance(v, str | int | float) for k, v in key.items()
            )
        ):
            raise ValueError("key must be an object of at most 16 strings and numbers")
        lookup_s = _seconds_list(data["lookup_s"], "lookup_s", 1, MAX_PRECISION, positive=True)
        overhead = _seconds_list(
            data["call_overhead_s"], "call_overhead_s", len(lookup_s) + 1, len(lookup_s) + 1
        )
        load = data["load_average"]
        if load is not None and not (_is_number(load) and 0 <= load < 1e6):
            raise ValueError("load_average must be a number >= 0 or null")
        return cls(
            lookup_s, _seconds(data["round_s_per_bit"], "round_s_per_bit"), overhead, key, load
        )


def _is_number(value) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _seconds(value, name: str, positive: bool = False) -> float:
    in_range = _is_number(value) and (value > 0 if positive else value >= 0)
    if not (in_range and value <= MAX_SECONDS):
        bound = "> 0" if positive else ">= 0"
        raise ValueError(f"{name} must be a number {bound} and <= {MAX_SECONDS:g} seconds")
    return float(value)


def _seconds_list(values, name: str, min_len: int, max_len: int, positive=False) -> tuple:
    if not isinstance(values, list) or not min_len <= len(values) <= max_len:
        raise ValueError(f"{name} must be a list of {min_len} to {max_len} numbers")
    return tuple(_seconds(value, f"{name}[{i}]", positive) for i, value in enumerate(values))


def machine_key() -> dict:
    """What the costs depend on: CPU, cores, concrete-python's version, the ``p_error``."""
    return {
        "machine": platform.machine(),
        "cpu": _cpu_model(),
        "cores": len(os.sched_getaffinity(0))
        if hasattr(os, "sched_getaffinity")
        else os.cpu_count(),
        "concrete_python": version("concrete-python"),
        "p_error": DEFAULT_P_ERROR,
    }


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()[:200]
    except OSError:
        pass
    return platform.processor()[:200]


def cache_path(key: dict | None = None) -> Path:
    """The cache file of this machine: ``$QNN_SKLEARN_CACHE_DIR`` or the XDG cache directory
    (``~/.cache/qnn_sklearn``), named by a hash of :func:`machine_key`."""
    key = machine_key() if key is None else key
    root = os.environ.get(CACHE_DIR_VARIABLE) or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache"),
        "qnn_sklearn",
    )
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]
    return Path(root) / f"pbs_costs_{digest}.json"


def read_machine_costs(path, expected_key: dict | None = None) -> MachineCosts:
    """The table in ``path``, read as untrusted (see the module docstring); with
    ``expected_key``, refused unless it was measured on that machine."""
    path = Path(path)
    try:
        text = _read_bounded(path)
        data = json.loads(text, parse_constant=_refuse_constant)
        costs = MachineCosts.from_json(data)
    except (OSError, UnicodeDecodeError, RecursionError, ValueError) as error:
        raise ValueError(
            f"Refused the PBS cost table {path}: {str(error)[:200]}. Delete the file to measure "
            "this machine's costs again."
        ) from error
    if expected_key is not None and costs.key != expected_key:
        raise ValueError(
            f"Refused the PBS cost table {path}: it was measured for {costs.key}, not this "
            f"machine ({expected_key}). Delete the file to measure again."
        )
    return costs


def _refuse_constant(name: str):
    raise ValueError(f"{name} is not a number JSON allows")


def _read_bounded(path: Path) -> str:
    """At most MAX_COST_FILE_BYTES of a regular file, without following a symbolic link."""
    descriptor = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    with os.fdopen(descriptor, "rb") as file:
        if not stat.S_ISREG(os.fstat(file.fileno()).st_mode):
            raise ValueError("not a regular file")
        raw = file.read(MAX_COST_FILE_BYTES + 1)
    if len(raw) > MAX_COST_FILE_BYTES:
        raise ValueError(f"larger than {MAX_COST_FILE_BYTES} bytes")
    return raw.decode("utf-8")


def write_machine_costs(costs: MachineCosts, path) -> None:
    """Write ``costs`` to ``path`` atomically (a reader never sees half a file)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    descriptor, temporary = tempfile.mkstemp(dir=path.parent, prefix=".pbs_costs_")
    try:
        with os.fdopen(descriptor, "w", encoding="utf-8") as file:
            json.dump(costs.to_json(), file, indent=2)
        os.replace(temporary, path)
    except BaseException:
        os.unlink(temporary)
        raise
