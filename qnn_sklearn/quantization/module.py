"""QuantizedModule: integer-only inference, in the clear or in FHE, from one program."""

from __future__ import annotations

import copy
import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np
from tqdm.auto import tqdm

from ..fhe_runtime import fhe
from .compile_options import CompileOptions
from .program import program_values, run_program
from .quantizers import UniformQuantizer
from .reports import LayerReport
from .run_options import RunOptions
from .stages import apply_stages
from .tabulation import choose_program

FHE_MODES = ("disable", "simulate", "execute")

_COMPILE_SAMPLE_ROWS = 256


def check_fhe_mode(fhe_mode: str) -> str:
    if fhe_mode not in FHE_MODES:
        raise ValueError(f"fhe must be one of {FHE_MODES}, got {fhe_mode!r}.")
    return fhe_mode


class QuantizedModule:
    """An integer model: clear pre-processing, input quantizer, integer program, dequantizer.

    Build one with ``qnn_sklearn.onnx.import_onnx`` (or ``compile_torch_model`` /
    ``compile_brevitas_qat_model``). ``forward(x, fhe=...)`` runs the same program in the clear
    (``"disable"``), in concrete-python's simulation (``"simulate"``) or encrypted
    (``"execute"``), after :meth:`compile` for the last two.
    """

    def __init__(
        self,
        input_shape: tuple[int, ...],
        preprocessing: tuple,
        input_quantizer: UniformQuantizer,
        steps: list,
        output_stages: tuple,
        layers: list[LayerReport],
    ):
        """``steps`` is the network's program, layer by layer; the circuit runs it as is
        (``program == "layered"``) unless :meth:`with_program` chose otherwise."""
        self.input_shape = tuple(input_shape)
        self.preprocessing = tuple(preprocessing)
        self.input_quantizer = input_quantizer
        self.layer_steps = steps
        self.output_stages = tuple(output_stages)
        self.layers = layers
        self.program, self.steps = "layered", steps
        self._circuit = None
        self.run_options = RunOptions()  # speed only: threads and simulation batches
        self._simulation = None  # (batch, simulation-only circuit), compiled on first use
        self.compile_options: CompileOptions | None = None  # set by compile()
        self._compile_set = None  # the integer inputset compile() used, to rebuild the circuit

    def with_program(self, program: str) -> QuantizedModule:
        """This model, uncompiled, with its circuit's program chosen by ``program``: "layered",
        "tabulated" (see quantization/tabulation.py) or "auto", the cheaper of the two.

        The integers it computes are the same; only the bootstraps differ. Tabulating may
        evaluate the whole program on every possible input row, so it is this explicit step
        (which the ONNX importer takes with "auto"), not part of constructing a module.
        """
        module = type(self)(
            self.input_shape,
            self.preprocessing,
            self.input_quantizer,
            self.layer_steps,
            self.output_stages,
            copy.deepcopy(self.layers),
        )
        circuit_input_shape = self._preprocess(np.zeros((1, *self.input_shape))).shape[1:]
        n_levels = len(self.input_quantizer.options.grid.levels)
        module.program, module.steps = choose_program(
            self.layer_steps, circuit_input_shape, n_levels, program
        )
        return module

    # -- input checks and the clear ends of the pipeline --------------------------------------

    def check_input(self, x) -> np.ndarray:
        """Float64 array of shape (n, *input_shape); ValueError naming what is wrong."""
        try:
            x = np.asarray(x, dtype=np.float64)
        except (TypeError, ValueError) as error:
            raise ValueError(f"Input must be numeric: {error}") from error
        if x.size == 0:
            raise ValueError("Input is empty: it has 0 samples.")
        if x.ndim == len(self.input_shape):
            x = x[None]
        if x.shape[1:] != self.input_shape:
            raise ValueError(
                f"Input has shape {x.shape}; expected (n_samples, *{self.input_shape}): "
                f"{int(np.prod(self.input_shape))} features per sample."
            )
        if x.shape[0] == 0:
            raise ValueError("Input is empty: it has 0 samples.")
        if not np.all(np.isfinite(x)):
            raise ValueError("Input contains NaN or infinity; clean or impute it first.")
        return x

    def quantize_input(self, x) -> np.ndarray:
        """Floats to the circuit's input integers ``q − qmin`` (so they are never negative)."""
        x = self._preprocess(self.check_input(x))
        return self.input_quantizer.quant(x) - self.input_quantizer.options.qmin

    def _preprocess(self, x: np.ndarray) -> np.ndarray:
        """The graph's clear operations before its input quantizer (e.g. a flatten)."""
        for function in self.preprocessing:
            x = function(x)
        return x

    def dequantize_output(self, q_out: np.ndarray) -> np.ndarray:
        """The circuit's output integers to the float output of the network."""
        return apply_stages(self.output_stages, q_out)

    # -- the integer program ------------------------------------------------------------------

    def _circuit_function(self, x):
        return run_program(self.steps, x)

    def quantized_forward(self, q_x: np.ndarray, fhe: str = "disable", verbose=False):
        """Integers in, integers out: the clear program, its simulation, or FHE execution."""
        check_fhe_mode(fhe)
        q_x = np.asarray(q_x, dtype=np.int64)
        if fhe == "disable":
            return run_program(self.steps, q_x)
        circuit = self._require_circuit()
        if fhe == "simulate" and len(q_x) >= self.run_options.min_batched_rows:
            return self._simulate_batched(q_x, verbose)
        if fhe == "simulate":
            outputs = (circuit.simulate(row[None]) for row in q_x)
        else:
            outputs = _execute_in_threads(circuit, q_x, self.run_options.fhe_threads)
        progress = tqdm(outputs, total=len(q_x), desc=f"FHE {fhe}", disable=not verbose, unit="row")
        shape = self.output_shape
        rows = [np.asarray(output).reshape(1, *shape) for output in progress]
        return np.concatenate(rows)

    def _simulate_batched(self, q_x: np.ndarray, verbose=False) -> np.ndarray:
        """Simulate ``run_options.simulation_batch`` rows per call of a simulation-only circuit.

        The circuit is the same program compiled with the same configuration and inputset,
        with a batch axis of that many rows instead of 1, the FHE circuit's
        per-bootstrap error probability, and no FHE execution (no keys). Every element keeps
        the bit width of the FHE circuit, so the simulation models the same bootstraps.
        concrete-python's simulation has a large cost per call, which batching divides among
        the rows (benchmarks/README.md, "Simulation speed"). The last
        chunk is padded with zero rows, whose outputs are dropped.
        """
        circuit = self._simulation_circuit()
        batch = self.run_options.simulation_batch
        outputs, shape = [], self.output_shape
        starts = range(0, len(q_x), batch)
        for start in tqdm(starts, desc="FHE simulate", disable=not verbose, unit="batch"):
            chunk = q_x[start : start + batch]
            n = len(chunk)
            if n < batch:
                chunk = np.concatenate([chunk, np.zeros((batch - n,) + chunk.shape[1:], np.int64)])
            simulated = np.asarray(circuit.simulate(chunk))
            outputs.append(simulated.reshape(batch, *shape)[:n])
        return np.concatenate(outputs)

    def _simulation_circuit(self):
        batch = self.run_options.simulation_batch
        if self._simulation is None or self._simulation[0] != batch:
            self._require_circuit()
            compile_set = self._compile_set
            # rows of the FHE circuit's inputset, tiled into batches (extremes in each)
            reps = -(-batch // len(compile_set))
            tiled = np.concatenate([compile_set] * reps)[:batch]
            batches = [tiled, np.roll(tiled, 1, axis=0), np.roll(tiled, 2, axis=0)]
            configuration = self.compile_options.simulation_configuration(self.fhe_circuit.p_error)
            compiler = fhe.Compiler(self._circuit_function, {"x": "encrypted"})
            self._simulation = batch, compiler.compile(batches, configuration=configuration)
        return self._simulation[1]

    @property
    def output_shape(self) -> tuple[int, ...]:
        """The features of one output row, e.g. (C, H, W) for a convolution's output: the
        circuit's results are given this shape, as the clear program's are."""
        circuit_input = self._preprocess(np.zeros((1, *self.input_shape)))
        zeros = np.zeros(circuit_input.shape, dtype=np.int64)
        return run_program(self.steps, zeros).shape[1:]

    def forward(self, x, fhe: str = "disable", verbose: bool = False) -> np.ndarray:
        """Float in, float out through the integer model."""
        return self.dequantize_output(self.quantized_forward(self.quantize_input(x), fhe, verbose))

    @property
    def is_compiled(self) -> bool:
        return self.compile_options is not None

    @property
    def fhe_circuit(self):
        """The concrete-python circuit; None before :meth:`compile`.

        A circuit does not survive pickling; it is compiled again, from the same integer
        inputset and configuration, the first time it is needed after unpickling.
        """
        if self._circuit is None and self.is_compiled:
            self._circuit = self._compile_circuit(self._compile_set, self.compile_options)
        return self._circuit

    def _require_circuit(self):
        if not self.is_compiled:
            raise RuntimeError(
                "This model has no FHE circuit yet: call compile(X) first, with representative "
                "inputs, to simulate or execute in FHE."
            )
        return self.fhe_circuit

    def __getstate__(self):
        state = self.__dict__.copy()
        state["_circuit"] = None
        state["_simulation"] = None
        return state

    def __setstate__(self, state):
        state.setdefault("_simulation", None)
        self.__dict__.update(state)

    # -- compilation --------------------------------------------------------------------------

    def compile(
        self,
        inputset,
        *,
        configuration: fhe.Configuration | None = None,
        p_error: float | None = None,
        global_p_error: float | None = None,
        verbose: bool = False,
    ):
        """Build the concrete-python circuit; returns it and stores it as ``fhe_circuit``.

        Bit widths come from the certified bounds (hints on every accumulator and lookup), so
        the inputset only needs to be representative: it sets the calibrated ranges reported
        by :meth:`bitwidth_report`. The grid's extreme inputs are added to it. The settings
        are checked and kept as ``compile_options`` (:class:`CompileOptions`); a refused
        setting leaves the previous circuit in place.
        """
        options = CompileOptions(p_error, global_p_error, configuration, verbose)
        q_x = self.quantize_input(inputset)
        self.calibrate(q_x)
        grid = self.input_quantizer.options.grid
        extremes = np.stack([np.zeros(q_x.shape[1:], np.int64), np.full(q_x.shape[1:], grid.span)])
        rng = np.random.default_rng(0)
        sample = q_x[rng.permutation(len(q_x))[:_COMPILE_SAMPLE_ROWS]]
        compile_set = np.concatenate([extremes, sample])
        self._circuit = self._compile_circuit(compile_set, options)
        self._simulation = None
        self._compile_set, self.compile_options = compile_set, options
        return self._circuit

    def _compile_circuit(self, compile_set: np.ndarray, options: CompileOptions):
        compiler = fhe.Compiler(self._circuit_function, {"x": "encrypted"})
        return compiler.compile(
            [row[None] for row in compile_set], configuration=options.circuit_configuration()
        )

    def calibrate(self, q_x: np.ndarray) -> None:
        """Record each layer's accumulator range on these inputs (for the report)."""
        values = program_values(self.layer_steps, np.asarray(q_x, dtype=np.int64))
        for report in self.layers:
            stored = values[report.value_index]
            acc = stored.reshape(len(stored), -1) + report.accumulator_min
            report.calibrated_min, report.calibrated_max = int(acc.min()), int(acc.max())

    def bitwidth_report(self) -> list[dict]:
        """Per layer (see LayerReport): certified and calibrated accumulator range, bits, PBS."""
        return [
            {
                "layer": report.name,
                "neurons": report.n_neurons,
                "certified_range": (
                    int(report.accumulator_min.min()),
                    int(report.accumulator_max.max()),
                ),
                "certified_bits": report.certified_bits,
                "calibrated_range": (
                    None
                    if report.calibrated_min is None
                    else (report.calibrated_min, report.calibrated_max)
                ),
                "pbs_count": report.pbs_count,
                "pbs_precision": report.pbs_precision,
                "lsbs_to_remove": report.lsbs_to_remove,
            }
            for report in self.layers
        ]


def _execute_in_threads(circuit, rows: np.ndarray, threads: int):
    """Encrypt, run and decrypt each row, in order; ``threads`` runs go at once.

    The server side runs concurrently, as concrete-python's own asynchronous mode does (it
    submits runs to a thread pool). Encryption and decryption, on the client's keys and
    random generator, stay one at a time.
    """
    circuit.keygen()  # before the threads: the first encryption would otherwise make the keys
    client_lock = threading.Lock()

    def execute(row):
        with client_lock:
            encrypted = circuit.encrypt(row[None])
        result = circuit.run(encrypted)
        with client_lock:
            return circuit.decrypt(result)

    with ThreadPoolExecutor(max_workers=min(threads, len(rows))) as pool:
        yield from pool.map(execute, rows)
