"""A fit of a small network runs on one torch thread and gives the caller's setting back."""

import pytest
import torch
from torch import nn

from qnn_sklearn.sklearn.training_threads import SMALL_LAYER_WEIGHTS, training_threads


@pytest.fixture
def two_threads():
    """The caller runs two torch threads; its own setting comes back after the test."""
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    yield
    torch.set_num_threads(before)


@pytest.mark.parametrize(
    ("network", "threads_inside"),
    [(nn.Linear(30, 120), 1), (nn.Linear(SMALL_LAYER_WEIGHTS, 1), 2)],
    ids=["small network: one thread", "wide layer: the caller's threads"],
)
def test_threads_while_training_and_after(two_threads, network, threads_inside):
    with training_threads(network):
        assert torch.get_num_threads() == threads_inside
    assert torch.get_num_threads() == 2


def test_the_setting_is_restored_when_training_fails(two_threads):
    with pytest.raises(RuntimeError, match="training failed"):
        with training_threads(nn.Linear(2, 2)):
            raise RuntimeError("training failed")
    assert torch.get_num_threads() == 2
