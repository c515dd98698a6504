"""RunOptions: validated settings of speed, never of results."""

from __future__ import annotations

import pytest

from qnn_sklearn.quantization.run_options import RunOptions, available_cores


def test_defaults():
    options = RunOptions()
    assert options.fhe_threads == available_cores() >= 1
    assert (options.simulation_batch, options.min_batched_rows) == (256, 64)


@pytest.mark.parametrize("name", ["fhe_threads", "simulation_batch", "min_batched_rows"])
@pytest.mark.parametrize("value", [0, -1, 2.0, True, None])
def test_bad_values_are_refused(name, value):
    with pytest.raises(ValueError, match=rf"^{name} must be an integer >= 1"):
        RunOptions(**{name: value})
