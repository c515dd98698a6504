"""CompileOptions: the error probabilities and concrete-python configuration of one circuit.

Made and validated once, in :meth:`QuantizedModule.compile`, and kept on the module as
``compile_options``: the execute circuit, the batched simulation circuit and the deployment's
server configuration all fork their configuration from it, so none derives ``p_error`` its
own way.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..fhe_runtime import fhe

SAVED_FIELDS = ("p_error", "global_p_error")
"""What a file keeps of a module's CompileOptions (:meth:`CompileOptions.to_json`): the error
probabilities, which pick the circuit's cryptographic parameters and so how often its results
differ from the clear model's. Not ``configuration``: concrete-python's ``Configuration`` has no
JSON form, and it holds paths and switches (an insecure key cache and its location, ...) that a
file from anyone must not set; nor ``verbose``, which only prints."""

DEFAULT_P_ERROR = 2.0**-40
"""Per-bootstrap error probability when neither ``p_error`` nor ``global_p_error`` is given.

Chosen so that FHE equals the clear integer model in practice: a model with 500 bootstraps
errs in about one prediction in 2·10⁹. Measured (benchmarks/README.md, "concrete-python knobs"):
2⁻²⁰ instead halves the FHE time and the keygen, but then each bootstrap errs with probability
~10⁻⁶, so such a model returns a result different from the clear one in about one prediction in
2,000. Pass ``p_error`` (or ``global_p_error``, per prediction) to ``compile`` to trade the two.
"""


def _check_error_probability(name: str, value) -> None:
    """ValueError unless ``value`` is None or a probability strictly between 0 and 1.

    concrete-python accepts any number and picks parameters from it; the circuit then errs
    in ways its simulation does not reproduce (p_error=2.0: simulation differed from clear on
    2 rows of 3, issue 13).
    """
    if value is None:
        return
    is_number = isinstance(value, int | float | np.integer | np.floating)
    if isinstance(value, bool) or not is_number or not 0.0 < value < 1.0:
        raise ValueError(
            f"{name} is a probability: it must be in (0, 1), exclusive; got {repr(value)[:100]}."
        )


@dataclass(frozen=True)
class CompileOptions:
    """How a QuantizedModule's circuit is compiled.

    Parameters
    ----------
    p_error : float or None
        Error probability of each bootstrap, in (0, 1).
    global_p_error : float or None
        Error probability of a whole prediction, in (0, 1). With neither given, each
        bootstrap errs with probability ``DEFAULT_P_ERROR``.
    configuration : fhe.Configuration or None
        concrete-python's other settings (key cache, compression, ...); its own ``p_error``
        and ``global_p_error`` are replaced by the two above.
    verbose : bool
        Let concrete-python print what it compiles.
    """

    p_error: float | None = None
    global_p_error: float | None = None
    configuration: fhe.Configuration | None = None
    verbose: bool = False

    def __post_init__(self):
        _check_error_probability("p_error", self.p_error)
        _check_error_probability("global_p_error", self.global_p_error)

    def to_json(self) -> dict:
        """The :data:`SAVED_FIELDS` as plain floats (or None)."""
        values = {name: getattr(self, name) for name in SAVED_FIELDS}
        return {name: None if value is None else float(value) for name, value in values.items()}

    @classmethod
    def from_json(cls, data, where: str) -> CompileOptions:
        """Inverse of :meth:`to_json` for a file that may come from anyone: ``ValueError``
        naming ``where`` unless ``data`` maps exactly the :data:`SAVED_FIELDS` to None or
        probabilities."""
        if not isinstance(data, dict) or sorted(data) != sorted(SAVED_FIELDS):
            raise ValueError(f"{where} must be an object with exactly the keys {SAVED_FIELDS}.")
        try:
            return cls(**data)
        except ValueError as error:
            raise ValueError(f"{where}: {error}") from None

    def circuit_configuration(self) -> fhe.Configuration:
        """The configuration of the circuit that executes (and simulates row by row)."""
        p_error = self.p_error
        if p_error is None and self.global_p_error is None:
            p_error = DEFAULT_P_ERROR
        return (self.configuration or fhe.Configuration()).fork(
            p_error=p_error, global_p_error=self.global_p_error, verbose=self.verbose
        )

    def simulation_configuration(self, circuit_p_error: float) -> fhe.Configuration:
        """A simulation-only configuration with the compiled circuit's per-bootstrap error.

        ``circuit_p_error`` is what concrete-python chose for the executing circuit
        (``circuit.p_error``). A global budget would be spread over the batch's many more
        bootstraps and pick other parameters; the per-bootstrap one models the same circuit.
        """
        return self.circuit_configuration().fork(
            fhe_simulation=True,
            fhe_execution=False,
            p_error=float(circuit_p_error),
            global_p_error=None,
        )
