"""AveragedNetworks: networks trained side by side on one input grid, their outputs averaged.

Why: on a small training set the seed moves a test row either way. At the defaults, iris
missed scikit-learn's MLP by one row of 38 on 3 of 20 seeds, 3 averaged networks on 1 (README,
the training section, which has the other sets). The networks keep their own weight and
activation quantizers: members inside one network, sharing them, still missed on 2 of the 20
seeds. They share the input grid (the client quantizes once) and the batches, and each trains
on its own loss (the estimators' ``get_loss``).

One circuit computes them side by side. Its output is their outputs concatenated, one block
per network on that network's scale; the client dequantizes each block and averages them
(quantization/stages.BlockMean). Each network's bootstraps add up: n networks cost n times one.
"""

from __future__ import annotations

import torch
from torch import nn

from ..quantization.rounding import RoundingPlan
from ..quantization.stages import MAX_AVERAGED_BLOCKS, BlockMean, Stage
from .network import SparseQuantNeuralNetwork

MAX_NETWORKS = MAX_AVERAGED_BLOCKS
"""Most networks averaged: as many blocks as a saved output stage may average."""


def check_n_networks(n_networks) -> int:
    """``n_networks`` (the estimators' setting) if valid, else ValueError naming the fix."""
    if isinstance(n_networks, bool) or not isinstance(n_networks, int):
        raise ValueError(f"n_networks must be an integer, got {str(n_networks)[:100]!r}.")
    if not 1 <= n_networks <= MAX_NETWORKS:
        raise ValueError(
            f"n_networks must be in 1..{MAX_NETWORKS}, got {n_networks}: 1 trains one network; "
            "more average that many in one circuit, at that many times its bootstraps."
        )
    return n_networks


class AveragedNetworks(nn.Module):
    """SparseQuantNeuralNetworks of one configuration, on the first one's input quantizer.

    In training, ``forward`` returns every network's output, shaped (rows, networks, outputs),
    so that each network gets its own loss; otherwise the mean over the networks (what the
    integer model computes); traced for the export, their concatenation (the circuit's output).
    """

    def __init__(self, networks: list[SparseQuantNeuralNetwork]):
        super().__init__()
        if not 2 <= len(networks) <= MAX_NETWORKS:
            raise ValueError(f"AveragedNetworks averages 2 to {MAX_NETWORKS} networks.")
        if any(network.init_kwargs != networks[0].init_kwargs for network in networks):
            raise ValueError("AveragedNetworks averages networks of one configuration.")
        for network in networks[1:]:
            network.input_quant = networks[0].input_quant  # one grid, calibrated once
        self.networks = nn.ModuleList(networks)

    @classmethod
    def of(cls, first: SparseQuantNeuralNetwork, n_networks: int) -> AveragedNetworks:
        """``first`` and ``n_networks − 1`` new networks of its configuration (drawn from
        torch's generator after it, so the first is the network a single fit would train)."""
        others = (SparseQuantNeuralNetwork(**first.init_kwargs) for _ in range(n_networks - 1))
        return cls([first, *others])

    @property
    def init_kwargs(self) -> dict:
        """The networks' constructor arguments (one configuration)."""
        return self.networks[0].init_kwargs

    @property
    def n_accum_bits(self) -> int:
        return self.networks[0].n_accum_bits

    @property
    def n_prune_neurons_percentage(self) -> float:
        return self.networks[0].n_prune_neurons_percentage

    @n_prune_neurons_percentage.setter
    def n_prune_neurons_percentage(self, share: float) -> None:
        """What the estimators' ``prune`` sets, on every network."""
        for network in self.networks:
            network.n_prune_neurons_percentage = share

    def forward(self, x):
        x = self.networks[0].quantize_input(x)
        outputs = [network.forward_quantized(x) for network in self.networks]
        if torch.jit.is_tracing():
            return torch.cat(outputs, dim=1)
        stacked = torch.stack(outputs, dim=1)
        return stacked if self.training else stacked.mean(dim=1)

    def train(self, mode: bool = True):
        """Each network's own fast walk (SparseQuantNeuralNetwork.train)."""
        if not isinstance(mode, bool):
            raise ValueError("training mode is expected to be boolean")
        self.training = self.networks.training = mode
        for network in self.networks:
            network.train(mode)
        return self

    def rounding_plan(self) -> RoundingPlan | None:
        """The networks' plans one after the other, as the exported graph has their layers."""
        plans = [network.rounding_plan() for network in self.networks]
        if plans[0] is None:
            return None
        return RoundingPlan(tuple(lsbs for plan in plans for lsbs in plan.lsbs))

    def client_stages(self) -> tuple[Stage, ...]:
        """The client's mean of the networks' dequantized blocks (the circuit outputs them
        side by side)."""
        return (BlockMean(len(self.networks)),)

    def __reduce__(self):
        """Rebuilt through ``__init__``, which shares the first network's input quantizer again
        (each network copies and pickles through its own ``__reduce__``)."""
        return (type(self), (list(self.networks),))

    # -- pruning, for the training callbacks: each network on its own ----------------------------

    def enable_pruning(self) -> None:
        for network in self.networks:
            network.enable_pruning()

    def refresh_pruning(self) -> None:
        for network in self.networks:
            network.refresh_pruning()

    def make_pruning_permanent(self) -> None:
        for network in self.networks:
            network.make_pruning_permanent()

    def weight_lr_limits(self) -> list[tuple[nn.Parameter, float]]:
        return [limit for network in self.networks for limit in network.weight_lr_limits()]

    def hidden_widths(self) -> list[list[int]]:
        return [network.hidden_widths() for network in self.networks]

    def with_state(self, state_dict: dict) -> AveragedNetworks:
        """Networks in the layout of ``state_dict`` and holding it (``load_params``)."""
        return type(self)(
            [
                network.with_state(_substate(state_dict, f"networks.{index}."))
                for index, network in enumerate(self.networks)
            ]
        )


def _substate(state_dict: dict, prefix: str) -> dict:
    """The entries of ``state_dict`` under ``prefix``, named as the submodule names them."""
    return {
        name[len(prefix) :]: value for name, value in state_dict.items() if name.startswith(prefix)
    }
