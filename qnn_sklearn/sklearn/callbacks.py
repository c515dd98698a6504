"""Training callbacks: the pruning life cycle of a SparseQuantNeuralNetwork."""

from __future__ import annotations

from skorch.callbacks import Callback


class AccumulatorPruning(Callback):
    """Keeps every accumulator within ``n_accum_bits`` while the network trains.

    Masks go on when training begins (the optimizer is rebuilt so it trains the masked
    parametrization) and are refreshed after each epoch of the first ``refresh_fraction`` of
    the epochs, as the weights move. The remaining epochs train under fixed masks, so the
    network recovers from the last refresh, which changes its function abruptly. After every
    optimizer step, a neuron whose weights grew over the budget loses its smallest inputs, so
    the network trains under the exact constraint it will be deployed with.

    After each epoch, the loss on the training set (in evaluation mode) is measured, and the
    state with the lowest one is kept. The fixed-mask epochs start from the best state of the
    refresh epochs, and training ends with the best state of all. A network of 3-bit integers
    changes its function in jumps: on the checkerboard, consecutive epochs' test accuracy
    went 0.944, 0.83, 0.944 at a steady training loss, and a last refresh at a bad moment
    left fixed masks that never got past 0.81 (issue 3). The last epoch is a draw from that
    noise. The masks are made permanent, with dead neurons removed, when training ends.

    Parameters
    ----------
    refresh_fraction : float
        Share of each fit's epochs after which the masks are recomputed.
    """

    def __init__(self, refresh_fraction: float = 0.5):
        self.refresh_fraction = refresh_fraction

    def on_train_begin(self, net, X=None, y=None, **kwargs):
        self.first_epoch_ = len(net.history)
        self.best_loss_ = float("inf")
        self.best_state_ = None
        net.module_.enable_pruning()
        net.initialize_optimizer()

    def on_batch_end(self, net, batch=None, training=False, **kwargs):
        if training:
            net.module_.enforce_budget()

    def on_epoch_end(self, net, dataset_train=None, **kwargs):
        epochs_done = len(net.history) - self.first_epoch_
        refreshing = epochs_done < self.refresh_fraction * net.max_epochs
        if refreshing:
            net.module_.refresh_pruning()
        loss = _evaluation_loss(net, dataset_train)
        if loss < self.best_loss_:
            self.best_loss_ = loss
            self.best_state_ = {
                key: value.detach().clone() for key, value in net.module_.state_dict().items()
            }
        last_refresh = refreshing and epochs_done + 1 >= self.refresh_fraction * net.max_epochs
        if last_refresh and self.best_state_ is not None:
            # the last refresh: train the best masks seen, not the last ones
            net.module_.load_state_dict(self.best_state_)

    def on_train_end(self, net, X=None, y=None, **kwargs):
        if self.best_state_ is not None:
            net.module_.load_state_dict(self.best_state_)
            self.best_state_ = None
        net.module_.make_pruning_permanent()


def _evaluation_loss(net, dataset) -> float:
    """The criterion's mean over ``dataset``, the network in evaluation mode."""
    total, count = 0.0, 0
    for batch in net.get_iterator(dataset, training=False):
        step = net.validation_step(batch)
        n_rows = len(step["y_pred"])
        total += float(step["loss"]) * n_rows
        count += n_rows
    net.module_.train()
    return total / count
