"""A fit of a small network runs on one torch thread and gives the caller's setting back."""

import torch
from torch import nn

from qnn_sklearn.sklearn.training_threads import SMALL_LAYER_WEIGHTS, training_threads


def test_a_small_network_trains_on_one_thread_and_the_setting_is_restored():
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        with training_threads(nn.Linear(30, 120)):
            assert torch.get_num_threads() == 1
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)


def test_a_wide_network_keeps_the_callers_threads():
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        with training_threads(nn.Linear(SMALL_LAYER_WEIGHTS, 1)):
            assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)


def test_the_setting_is_restored_when_training_fails():
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        try:
            with training_threads(nn.Linear(2, 2)):
                raise RuntimeError("training failed")
        except RuntimeError:
            pass
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)
