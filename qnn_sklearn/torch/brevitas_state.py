"""Loading a Brevitas network's own state into the tensors it has, while it trains."""

from __future__ import annotations

import threading

from brevitas import config
from torch import nn

_CONFIG_LOCK = threading.Lock()
"""Brevitas reads the switch from its global config; loads that change it take turns."""


def load_state_in_place(module: nn.Module, state_dict: dict) -> None:
    """``module.load_state_dict(state_dict)`` that keeps every parameter and buffer object,
    for a state the same module saved earlier in the same fit.

    Why: by default Brevitas builds each quantizer anew when a state is loaded (its
    ``REINIT_ON_STATE_DICT_LOAD``), so an activation quantizer's learned scale became a new
    parameter. Restored so when the fixed-mask epochs begin (callbacks.BestTrainingState),
    the optimizer went on stepping the old scales, and the network's stayed frozen for the
    rest of the fit (issue 15). Loaded in place, the values are the same and the optimizer
    keeps training them. Brevitas' own utilities switch the setting off the same way
    (``brevitas.nn.utils``).
    """
    with _CONFIG_LOCK:
        reinit = config.REINIT_ON_STATE_DICT_LOAD
        config.REINIT_ON_STATE_DICT_LOAD = False
        try:
            module.load_state_dict(state_dict)
        finally:
            config.REINIT_ON_STATE_DICT_LOAD = reinit
