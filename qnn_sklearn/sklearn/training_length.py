"""How many epochs a fit trains: ``max_epochs``, or the ``"auto"`` rule on the data's size."""

from __future__ import annotations

import math

AUTO_EPOCHS = "auto"

MIN_AUTO_EPOCHS = 50
"""Fewest epochs of ``max_epochs="auto"``: what sets of 20 batches or more train (1,280 rows
at the default batch of 64)."""

MIN_AUTO_STEPS = 1000
"""Fewest optimizer steps of ``max_epochs="auto"``. At the defaults (batch 64, 50 epochs),
iris's 112 training rows got 100 steps and 0.76 accuracy; 1,000 steps (500 epochs) gave 0.97,
scikit-learn's MLP's score (seed 0, measured one change at a time; ROBUSTNESS.md has the
defaults over seeds 0–2 as they stand)."""


def training_epochs(max_epochs, n_rows: int, batch_size: int) -> int:
    """The epochs of a fit on ``n_rows`` rows: ``max_epochs`` itself if it is a positive
    integer; for ``"auto"``, at least ``MIN_AUTO_EPOCHS`` and at least enough epochs for
    ``MIN_AUTO_STEPS`` optimizer steps (a small set gets more epochs, a large one 50).

    ValueError, before training, for any other value.
    """
    if max_epochs == AUTO_EPOCHS:
        batches = 1 if batch_size in (None, -1) else math.ceil(n_rows / batch_size)
        return max(MIN_AUTO_EPOCHS, math.ceil(MIN_AUTO_STEPS / batches))
    if isinstance(max_epochs, bool) or not isinstance(max_epochs, int) or max_epochs < 1:
        raise ValueError(
            f'max_epochs must be a positive integer or "auto", got {max_epochs!r}; "auto" '
            f"trains at least {MIN_AUTO_EPOCHS} epochs and at least {MIN_AUTO_STEPS} steps."
        )
    return max_epochs
