"""A network's own state loaded in place: the same values, the same parameter objects."""

from __future__ import annotations

import torch
from brevitas import config

from qnn_sklearn.torch.brevitas_state import load_state_in_place
from qnn_sklearn.torch.network import SparseQuantNeuralNetwork


def _trained_network(seed: int) -> SparseQuantNeuralNetwork:
    torch.manual_seed(seed)
    network = SparseQuantNeuralNetwork(input_dim=4, n_layers=2, n_outputs=3)
    for _ in range(3):  # the quantizers calibrate on training batches
        network(torch.randn(16, 4))
    return network


def test_loads_the_same_values_into_the_same_tensors():
    source, target = _trained_network(0), _trained_network(1)
    parameters = dict(target.named_parameters())
    load_state_in_place(target, source.state_dict())
    assert dict(target.named_parameters()) == parameters  # the same objects
    for (name, expected), got in zip(source.state_dict().items(), target.state_dict().values()):
        assert torch.equal(expected, got), name
    x = torch.randn(32, 4)
    assert torch.equal(source.eval()(x), target.eval()(x))
    assert config.REINIT_ON_STATE_DICT_LOAD  # Brevitas' setting is back


def test_a_plain_load_replaces_the_learned_scales():
    """What load_state_in_place avoids: Brevitas builds an activation quantizer anew."""
    source, target = _trained_network(0), _trained_network(1)
    parameters = dict(target.named_parameters())
    target.load_state_dict(source.state_dict())
    replaced = [name for name, p in target.named_parameters() if parameters[name] is not p]
    assert replaced and all(name.endswith("scaling_impl.value") for name in replaced)
