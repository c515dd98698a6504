"""How many torch intra-op threads a fit uses: one for small networks, torch's own otherwise.

A small network's step multiplies matrices of a few hundred rows at most. Splitting such a
product over threads saves nothing on an idle machine, and when the cores are busy (a grid
search's other fits, a Dask worker, a test run) each step waits for threads that the OS has
descheduled. Measured on the 2-core machine, breast_cancer (30 → 120 → 120 → 2):

- idle (load 0.4): 10 epochs in 0.98 s with one thread or two;
- busy (load 3.5, 20 epochs): 3.1 s with one thread against 27.2 s with two.

A wide layer does gain from a second thread: MNIST-5k (784 → 784 → 784 → 10), 2 epochs, idle:
8.7 s with one thread, 6.8 s with two. So only networks whose largest layer has fewer than
``SMALL_LAYER_WEIGHTS`` weights train on one thread. The setting is the process's, so the
caller's is restored when the fit ends.
"""

from __future__ import annotations

from contextlib import contextmanager

import torch

SMALL_LAYER_WEIGHTS = 2**17
"""Largest layer (weights) of a network that trains on one thread: breast_cancer's 14k and
digits' 65k are below, MNIST's 615k above."""


@contextmanager
def training_threads(module: torch.nn.Module):
    """Run the block on one torch thread if ``module`` is small, then restore the caller's."""
    largest = max((p.numel() for p in module.parameters() if p.dim() >= 2), default=0)
    previous = torch.get_num_threads()
    if largest < SMALL_LAYER_WEIGHTS:
        torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(previous)
