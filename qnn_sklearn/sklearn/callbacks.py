"""Training callbacks: the pruning life cycle of a SparseQuantNeuralNetwork."""

from __future__ import annotations

from skorch.callbacks import Callback


class AccumulatorPruning(Callback):
    """Keeps every accumulator within ``n_accum_bits`` while the network trains.

    Masks go on when training begins (the optimizer is rebuilt so it trains the masked
    parametrization), are refreshed after every epoch as the weights move, and are made
    permanent, with dead neurons removed, when training ends.
    """

    def on_train_begin(self, net, X=None, y=None, **kwargs):
        net.module_.enable_pruning()
        net.initialize_optimizer()

    def on_epoch_end(self, net, **kwargs):
        net.module_.refresh_pruning()

    def on_train_end(self, net, X=None, y=None, **kwargs):
        net.module_.make_pruning_permanent()
