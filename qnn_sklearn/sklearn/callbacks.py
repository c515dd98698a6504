"""Training callbacks: the pruning life cycle of a SparseQuantNeuralNetwork."""

from __future__ import annotations

from skorch.callbacks import Callback


class AccumulatorPruning(Callback):
    """Keeps every accumulator within ``n_accum_bits`` while the network trains.

    Masks go on when training begins (the optimizer is rebuilt so it trains the masked
    parametrization) and are refreshed after each epoch of the first ``refresh_fraction`` of
    the epochs, as the weights move. The remaining epochs train under fixed masks, so the
    network recovers from the last refresh, which changes its function abruptly. The masks are
    made permanent, with dead neurons removed, when training ends.

    Parameters
    ----------
    refresh_fraction : float
        Share of each fit's epochs after which the masks are recomputed.
    """

    def __init__(self, refresh_fraction: float = 0.5):
        self.refresh_fraction = refresh_fraction

    def on_train_begin(self, net, X=None, y=None, **kwargs):
        self.first_epoch_ = len(net.history)
        net.module_.enable_pruning()
        net.initialize_optimizer()

    def on_epoch_end(self, net, **kwargs):
        epochs_done = len(net.history) - self.first_epoch_
        if epochs_done < self.refresh_fraction * net.max_epochs:
            net.module_.refresh_pruning()

    def on_train_end(self, net, X=None, y=None, **kwargs):
        net.module_.make_pruning_permanent()
