"""SparseQuantNeuralNetwork: a Brevitas MLP whose every accumulator fits ``n_accum_bits``.

Layout: input quantizer → (QuantLinear → activation → activation quantizer) × (n_layers − 1)
→ QuantLinear. The last layer's accumulator is the network output; it is dequantized on the
client, so it needs no quantizer.

Pruning is per neuron: each row of every QuantLinear keeps its largest integer weights while
its accumulator's range over the input grid stays within its layer's budget,
``±(2^(n_accum_bits−1) − 1)`` less the room a rounded layer leaves for the rounding's carry
(:func:`layer_budgets`), so the bound holds for every neuron, not only on average over a
layer. After a ReLU the inputs are non-negative: positive weights then fill the top of the
range and negative ones the bottom, each up to the limit (quantization/bounds.py).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from brevitas import nn as qnn
from torch import nn
from torch.nn.utils import parametrize

from ..quantization.bounds import (
    max_terms,
    signed_limit,
)
from ..quantization.grid import Grid
from ..quantization.rounding import (
    AUTO_ROUNDING,
    RoundingPlan,
    carry_free_limit,
    check_rounding_threshold_bits,
    lsbs_for_threshold,
    round_accumulator,
)
from . import fake_quant
from .fake_quant import FakeQuantized
from .input_quantizer import calibrated_input_quantizer
from .neuron_pruning import NeuronPruning
from .pruning import WeightMask, accumulator_ends, integer_values, raw_weight, sliced_linear

MAX_BITWIDTH_BACKWARD_COMPATIBLE = 8
"""Largest accumulator a seed-compatible model may certify (``n_accum_bits``'s usual cap)."""

AUTO_ROUNDING_EXTRA_BITS = 2
"""``rounding_threshold_bits="auto"`` keeps ``n_a_bits + AUTO_ROUNDING_EXTRA_BITS`` bits of
each accumulator: two more bits than the activation grid it feeds has levels for. At 3-bit
activations and ``n_accum_bits=8`` the carry-free budget (±123, :func:`layer_budgets`) then
rounds away 3 bits before 5-bit lookups, on every layer and at every step. One extra bit (4
bits away, 4-bit lookups, ±119) costs a tenth less per neuron (34.4 against 38.6 ms,
benchmarks/results/rounding_carry.json) but is too coarse: the checkerboard sweep's worst
point fell to 0.71 (README, the training section)."""

RELU_GRADIENT_SLOPE = 0.1
"""In training, the share of the gradient a hidden ReLU passes where its (unrounded)
accumulator is ≤ 0: a dead neuron can come back (see ``SparseQuantNeuralNetwork._activate``).
The forward is ReLU's, so the trained network is the deployed one."""

NARROW_INPUT_FEATURES = 16
"""Inputs of at most this many features get ``NARROW_INPUT_BITS`` by default, wider ones
``WIDE_INPUT_BITS`` (see :func:`default_input_bits`)."""

NARROW_INPUT_BITS, WIDE_INPUT_BITS = 5, 4

WIDE_NETWORK_FEATURES = 24
"""Inputs of more than this many features make a wide network: by default it gets
``WIDE_ACCUM_BITS`` and prunes ``PRUNED_SHARE`` of its hidden neurons, a narrower one
``ACCUM_BITS`` and no structured pruning (:func:`default_accum_bits`,
:func:`default_pruned_share`)."""

ACCUM_BITS, WIDE_ACCUM_BITS = 8, 9

PRUNED_SHARE = 0.6

WEIGHT_LR_LIMIT = 1 / 32
"""A linear layer's weights train at a learning rate of at most ``WEIGHT_LR_LIMIT / √fan_in``
(:meth:`SparseQuantNeuralNetwork.weight_lr_limits`), its fan-in taken before pruning, when the
optimizer is Adam or a variant (the estimators' ``limit_weight_lr``; sklearn/weight_lr.py).

Why: Adam moves every weight by about ``lr`` per step, whatever its gradient, while torch
initializes a layer's weights within ``±1/√fan_in``, and a 3-bit grid has four steps on each
side. So at one ``lr`` a wide layer's integer weights flip more often than a narrow layer's;
the limit keeps a step to about an eighth of the initial grid step. At the default lr (1e-3)
it binds no layer of up to 976 inputs, so the defaults train as before. At lr 1e-2 (issue 15,
seeds 0–2), MNIST-5k went from 0.894 / 0.867 / 0.890 to 0.923 / 0.924 / 0.928 (scikit-learn's
float MLP, seeds 0 and 1: 0.934–0.941 at lr 1e-3 to 1e-2): unlimited, its evaluation loss
rose to 2.0–2.4 while the masks were refreshed. The checkerboard sweep reached 0.92 on 36 of
its 36 points (34 before: seed 1 at lr 1e-2 and batch 64 went from 0.916 to 0.948); its seeds
3–5 at lr 1e-2 missed 0.92 3 times of 12 with the limit as without. README.md, the training
section, has the rest.
"""

_NON_NEGATIVE_ACTIVATIONS = (nn.ReLU, nn.ReLU6, nn.Sigmoid, nn.Softplus, nn.Hardsigmoid)


MIN_GRID_BITS = 2
"""Fewest bits of a weight, activation or input grid. Brevitas exports every 1-bit quantizer
as QONNX ``BipolarQuant`` (±scale), even an unsigned one whose forward computes {0, scale},
and 1-bit weights could not be pruned to 0; a signed narrow 1-bit grid holds only 0."""


def default_input_bits(
    input_dim: int, n_w_bits: int, n_a_bits: int, first_budget: int, signed: bool, narrow: bool
) -> int:
    """The input grid's bits when the user gives none: ``NARROW_INPUT_BITS`` (5) on at most
    ``NARROW_INPUT_FEATURES`` (16) features, else ``WIDE_INPUT_BITS`` (4); never fewer than
    ``n_a_bits``, and ``n_a_bits`` if one first-layer product would not fit the first layer's
    budget (its largest ``|accumulator|``).

    The input is quantized by the client, so its bits cost no bootstrap; they widen only the
    first layer's accumulators, which rounding brings back to the lookup's precision. Each
    extra bit halves the inputs a first-layer neuron can hold within the budget, hence fewer
    bits on wide inputs. At 3-bit inputs iris reached 0.79 and breast_cancer 0.92 where
    scikit-learn's MLP reaches 0.97 (ROBUSTNESS.md, the defaults table).
    """
    target = max(
        n_a_bits, NARROW_INPUT_BITS if input_dim <= NARROW_INPUT_FEATURES else WIDE_INPUT_BITS
    )
    max_input = Grid(target, signed=signed, narrow=signed).max_abs
    max_weight = Grid(n_w_bits, signed=True, narrow=narrow).max_abs
    return target if max_terms(first_budget, max_weight, max_input) >= 1 else n_a_bits


def default_accum_bits(input_dim: int, rounded: bool) -> int:
    """The accumulators' bits when the user gives none: ``WIDE_ACCUM_BITS`` (9) on more than
    ``WIDE_NETWORK_FEATURES`` (24) features when the hidden accumulators are ``rounded``
    before their lookups, else ``ACCUM_BITS`` (8). Unrounded, a hidden layer's lookup reads
    the whole accumulator, and each bit multiplies a lookup's cost: 416 ms a bootstrap at 8
    bits, 3.7 times 7 bits' (benchmarks/results/pbs_floor.json, which stops at 8).

    Every layer of a wide network has a wide fan-in (the input's features, or ×4 of them
    hidden), and the budget bounds ``Σ|w|·max|x|`` per neuron: at 8 bits a digits neuron held
    about six full-size products, and the defaults missed the mean of scikit-learn's MLP by
    more than 2 points on 9 of 20 seeds. Rounding keeps each lookup at
    ``rounding_threshold_bits`` whatever the accumulator's width, so a ninth bit costs one
    rounding bit more per neuron (about 15% on digits). Pruning 60% of the neurons instead of
    half pays it back on breast_cancer, and on digits by the bootstraps' floor (measured in
    FHE, 9.67 s a row against 9.24 at a higher load; README, the anchor); MNIST-5k's second
    layer keeps more live neurons at 9 bits, so it costs a fifth to a third more. With both
    (seeds 0–11 at 4c912b6, a ``/tmp`` probe; the README's training section has the rest):
    digits 0.964–0.976, mean 0.972, against 0.947–0.967 (0.957), at an FHE floor of 8.7 s a
    row against 9.1; MNIST-5k 0.934–0.939 on seeds 0–2 against 0.918–0.930. Over 20 seeds
    (ROBUSTNESS.md) digits came within 2 points of the MLP's mean on all 20 instead of 11.
    On narrow inputs a ninth bit did not help: iris lost a seed.
    """
    return WIDE_ACCUM_BITS if rounded and input_dim > WIDE_NETWORK_FEATURES else ACCUM_BITS


def default_pruned_share(input_dim: int) -> float:
    """The share of hidden neurons structured pruning removes when the user gives none:
    ``PRUNED_SHARE`` (60%) on more than ``WIDE_NETWORK_FEATURES`` (24) features, else none.

    Every hidden neuron costs the circuit the same bootstraps (its rounding and its lookup),
    so the FHE latency is proportional to the neurons kept. Wide inputs give the ×4 hidden
    layers more neurons than accuracy needs: at half, breast_cancer (30 features), digits (64)
    and MNIST-5k (784, ×1) kept their accuracy at half the bootstraps (seeds 0–2, within 2
    points of scikit-learn's MLP; ROBUSTNESS.md has the table), and with the wide networks'
    9-bit accumulators (:func:`default_accum_bits`) at 60%. At 20 features (the clusters
    task and make_regression) half cost 1–2.5 points of accuracy and up to 0.008 of R², to
    the edge of those targets; at 4 (iris) one seed lost 5 points.
    """
    return PRUNED_SHARE if input_dim > WIDE_NETWORK_FEATURES else 0.0


def layer_budgets(
    n_layers: int, n_accum_bits: int, rounding_threshold_bits: int | None
) -> tuple[int, ...]:
    """Largest ``|accumulator|`` of each linear layer: ``±(2^(n_accum_bits−1) − 1)``, and,
    for a hidden layer that rounds before its lookup, the part of it whose rounding carries
    into no extra lookup bit (rounding.carry_free_limit). So a rounded lookup reads
    ``rounding_threshold_bits`` bits, not one more for the few values at the top."""
    limit = signed_limit(n_accum_bits)
    if rounding_threshold_bits is None:
        return (limit,) * n_layers
    return (carry_free_limit(limit, rounding_threshold_bits),) * (n_layers - 1) + (limit,)


def _check_bits(name: str, value, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}.")
    return value


class SparseQuantNeuralNetwork(NeuronPruning, nn.Module):
    """Quantization-aware MLP with per-neuron accumulator budgets.

    Parameters
    ----------
    input_dim, n_outputs : int
        Features in, outputs (classes or targets) out.
    n_layers : int
        Number of linear layers; 1 is a quantized linear model.
    n_hidden_neurons_multiplier : int
        Hidden width is ``input_dim * n_hidden_neurons_multiplier``.
    n_w_bits, n_a_bits : int
        Bits of weights and of activations, at least ``MIN_GRID_BITS`` (2).
    n_accum_bits : int or None
        Bits every accumulator must fit, sign included. None: 9 on more than 24 features
        with rounded accumulators (``rounding_threshold_bits``), else 8
        (:func:`default_accum_bits` says why).
    n_prune_neurons_percentage : float or None
        Fraction in [0, 1) of each hidden layer's neurons (of its width before any pruning)
        removed by structured pruning: when the masks go on, each hidden layer keeps its rows
        of largest L2 norm. None: 60% on more than 24 features, else none
        (:func:`default_pruned_share` says why).
    activation_function : type
        torch activation class, instantiated once per hidden layer. The estimators check in
        ``fit``, before training, that the integer model can import it (module_checks.py).
    quant_narrow : bool
        Narrow weight and activation grids (e.g. [-3, 3] instead of [-4, 3] at 3 bits). A
        signed input grid is always narrow (see ``calibrated_input_quantizer``).
    quant_signed : bool
        Signed input and activation grids. Activations that cannot be negative (ReLU,
        Sigmoid, ...) always get an unsigned grid: a sign bit would waste half the levels.
    n_input_bits : int or None
        Bits of the input grid; None: 5 on at most 16 features, else 4, and at least
        ``n_a_bits`` (:func:`default_input_bits` says why and when it falls back). The
        input grid is the client's, and on few features it sets the FHE cost alone: the
        circuit can then read each output from one table on the packed input row
        (quantization/tabulation.py), so two 2-bit features cost two 4-bit lookups whatever
        ``n_a_bits`` the hidden layers use.
    rounding_threshold_bits : int, "auto" or None
        Train with every hidden accumulator rounded (half up) to a multiple of ``2**lsbs``
        before its activation, ``lsbs`` the fewest low bits that leave each neuron's certified
        range ``rounding_threshold_bits`` bits wide (``"auto"``: ``n_a_bits + 2``). The
        integer model rounds the same bits (:meth:`rounding_plan`), so each lookup runs at
        that precision and the trained network is the deployed one. The hidden layers' budget
        then leaves room for the rounding's carry (:func:`layer_budgets`). None: exact
        accumulators.
    """

    def __init__(
        self,
        input_dim: int,
        n_layers: int,
        n_outputs: int,
        n_hidden_neurons_multiplier: int = 4,
        n_w_bits: int = 3,
        n_a_bits: int = 3,
        n_accum_bits: int | None = None,
        n_prune_neurons_percentage: float | None = None,
        activation_function=nn.ReLU,
        quant_narrow: bool = False,
        quant_signed: bool = True,
        rounding_threshold_bits: int | str | None = None,
        n_input_bits: int | None = None,
    ):
        super().__init__()
        for name in ("input_dim", "n_outputs", "n_hidden_neurons_multiplier"):
            _check_bits(name, locals()[name])
        if isinstance(n_layers, bool) or not isinstance(n_layers, int) or n_layers < 1:
            raise ValueError(f"n_layers must be an integer >= 1, got {n_layers!r}.")
        if n_accum_bits is not None:
            _check_bits("n_accum_bits", n_accum_bits)
        for name in ("n_w_bits", "n_a_bits"):
            _check_bits(name, locals()[name], MIN_GRID_BITS)
        if n_input_bits is not None:
            _check_bits("n_input_bits", n_input_bits, MIN_GRID_BITS)
        if n_prune_neurons_percentage is not None and not 0.0 <= n_prune_neurons_percentage < 1.0:
            raise ValueError(
                "n_prune_neurons_percentage must be None or in [0, 1), got "
                f"{n_prune_neurons_percentage}."
            )
        self.init_kwargs = {
            "input_dim": input_dim,
            "n_layers": n_layers,
            "n_outputs": n_outputs,
            "n_hidden_neurons_multiplier": n_hidden_neurons_multiplier,
            "n_w_bits": n_w_bits,
            "n_a_bits": n_a_bits,
            "n_accum_bits": n_accum_bits,
            "n_prune_neurons_percentage": n_prune_neurons_percentage,
            "activation_function": activation_function,
            "quant_narrow": quant_narrow,
            "quant_signed": quant_signed,
            "rounding_threshold_bits": rounding_threshold_bits,
            "n_input_bits": n_input_bits,
        }
        rounding_threshold_bits = check_rounding_threshold_bits(rounding_threshold_bits)
        if rounding_threshold_bits == AUTO_ROUNDING:
            rounding_threshold_bits = n_a_bits + AUTO_ROUNDING_EXTRA_BITS
        self.rounding_threshold_bits = rounding_threshold_bits
        if n_accum_bits is None:
            n_accum_bits = default_accum_bits(input_dim, rounding_threshold_bits is not None)
        self.n_w_bits, self.n_a_bits, self.n_accum_bits = n_w_bits, n_a_bits, n_accum_bits
        self.layer_budgets = layer_budgets(n_layers, n_accum_bits, rounding_threshold_bits)
        if n_input_bits is None:
            n_input_bits = default_input_bits(
                input_dim, n_w_bits, n_a_bits, self.layer_budgets[0], quant_signed, quant_narrow
            )
        self.n_input_bits = n_input_bits
        if n_prune_neurons_percentage is None:
            n_prune_neurons_percentage = default_pruned_share(input_dim)
        self.n_prune_neurons_percentage = n_prune_neurons_percentage
        self.quant_narrow = quant_narrow
        widths = layer_widths(input_dim, n_layers, n_outputs, n_hidden_neurons_multiplier)
        self.unpruned_widths = tuple(widths)

        self.input_quant = calibrated_input_quantizer(self.n_input_bits, quant_signed)
        self.linears = nn.ModuleList(
            qnn.QuantLinear(
                n_in,
                n_out,
                bias=True,
                weight_bit_width=n_w_bits,
                weight_narrow_range=quant_narrow,
            )
            for n_in, n_out in zip(widths[:-1], widths[1:])
        )
        self.activations = nn.ModuleList(activation_function() for _ in range(n_layers - 1))
        self._ranges: tuple[tuple[int, int], ...] | None = None
        act_signed = quant_signed and not isinstance(
            self.activations[0] if n_layers > 1 else None, _NON_NEGATIVE_ACTIVATIONS
        )
        self.act_quants = nn.ModuleList(
            qnn.QuantIdentity(
                bit_width=n_a_bits,
                signed=act_signed,
                narrow_range=quant_narrow,
                return_quant_tensor=True,
            )
            for _ in range(n_layers - 1)
        )
        if self.max_active_neurons() == 0:
            raise ValueError(
                f"n_accum_bits={n_accum_bits} leaves no room for even one "
                f"{n_w_bits}-bit weight times one {max(n_a_bits, self.n_input_bits)}-bit input; "
                "raise n_accum_bits or lower n_w_bits / n_a_bits / n_input_bits."
            )

    def train(self, mode: bool = True):
        """Set every submodule's ``training`` flag, as ``nn.Module.train`` does, in one flat
        walk over the module graph: training switches the mode twice per epoch (for the
        best-state evaluation and back), through the ~240 modules Brevitas builds for a
        3-layer network. ``nn.Module.train``'s recursion, each flag set through
        ``nn.Module.__setattr__``, cost three times a loop over ``self.modules()``, and that
        loop twice this walk, most of it spent building the names the generator yields
        (0.75–1.2 against 0.34–0.41 ms a pair of switches, one run on a loaded machine)."""
        if not isinstance(mode, bool):
            raise ValueError("training mode is expected to be boolean")
        seen, pending = {id(self)}, [self]
        while pending:
            module = pending.pop()
            object.__setattr__(module, "training", mode)  # a plain attribute of every Module
            for child in module._modules.values():
                if child is not None and id(child) not in seen:
                    seen.add(id(child))
                    pending.append(child)
        return self

    def forward(self, x):
        return self.forward_quantized(self.quantize_input(x))

    def quantize_input(self, x):
        """``x`` on the input grid: what the client sends, and what :meth:`forward_quantized`
        reads (networks averaged in one circuit share it: torch/averaged.py)."""
        if torch.jit.is_tracing():
            # the ONNX export traces the network, exactly: the integer model rounds by the plan
            # itself. (Tracing is per thread; torch.onnx.is_in_onnx_export() is process-wide
            # and would send another thread's training step down this path.)
            return self.input_quant(x)
        return fake_quant.activation(self.input_quant, x)

    def forward_quantized(self, x):
        """The network's output from its quantized input (:meth:`quantize_input`'s)."""
        if torch.jit.is_tracing():
            for linear, activation, act_quant in zip(
                self.linears, self.activations, self.act_quants
            ):
                x = act_quant(activation(linear(x)))
            return self.linears[-1](x)
        # Training and prediction: Brevitas' quantizers computed in plain torch (fake_quant.py,
        # for speed); each layer's weights are quantized once per forward, for the budget, the
        # rounding plan and the layer itself.
        weights, ends = zip(*self.quantized_weights())
        if self.rounding_threshold_bits is None:
            lsbs = (0,) * len(self.act_quants)
        else:
            lsbs = self._plan(ends[:-1]).lsbs
        for linear, weight, layer_lsbs, activation, act_quant in zip(
            self.linears, weights, lsbs, self.activations, self.act_quants
        ):
            y = self._product(linear, weight, x)
            shift = self._rounding_shift(y, linear, weight, x, layer_lsbs)
            x = fake_quant.activation(act_quant, self._activate(activation, y, shift))
        return self._product(self.linears[-1], weights[-1], x)

    # -- rounding ------------------------------------------------------------------------------

    @staticmethod
    def _product(linear, weight: FakeQuantized, x: FakeQuantized) -> torch.Tensor:
        """``linear(x)`` on its quantized ``weight``: the product Brevitas' QuantTensor handler
        computes (``F.linear`` on the quantized values and the float bias)."""
        return F.linear(x.value, weight.value, linear.bias)

    @staticmethod
    def _rounding_shift(y, linear, weight: FakeQuantized, x: FakeQuantized, lsbs: int):
        """What rounding the product ``y``'s integer accumulator away ``lsbs`` bits adds to it,
        as the integer model rounds it (None for 0 bits). The accumulator is ``(y − bias) /
        (s_x · s_w)``. The shift is a constant to the gradient: the rounding is
        straight-through, so the weights learn to place their accumulators where the coarse
        lookup sends them the right way.
        """
        if not lsbs:
            return None
        with torch.no_grad():
            unit = x.scale * weight.scale
            accumulator = torch.round((y - linear.bias) / unit)
            return (round_accumulator(accumulator, lsbs) - accumulator) * unit

    def _activate(self, activation, y: torch.Tensor, shift: torch.Tensor | None) -> torch.Tensor:
        """``activation`` of the rounded product ``y + shift``; in training, with the gradient
        the activation has at the unrounded product ``y``, and a ReLU's zero side passing
        ``RELU_GRADIENT_SLOPE`` of it.

        Why (measured on the checkerboard, issue 15): the rounding widens ReLU's zero region
        by up to half a rounding step, and a neuron whose rounded accumulators are ≤ 0 on
        every row gets no gradient, so it never comes back. At lr 1e-2, eight epochs left 6%
        of the second hidden layer's neurons alive, and the worst of three seeds ended at 0.51
        (batch 64, 60 epochs). The slope alone lifted it to 0.72, the unrounded gradient
        alone to 0.76; together, 0.944.
        """
        if not self.training:
            return activation(y if shift is None else y + shift)
        with torch.no_grad():
            value = activation(y if shift is None else y + shift)
        if isinstance(activation, nn.ReLU):
            return _ReluForwardOf.apply(y, value)
        return _ForwardOf.apply(activation(y), value)

    def rounding_plan(self) -> RoundingPlan | None:
        """Bits each hidden layer rounds away, for training and the integer model alike;
        None without rounding (and the exported graph is exact: the integer model rounds).

        The plan follows the current weights, so training makes it again at each forward.
        It is computed on the grids' full ranges; the integer model certifies ranges within
        these (its lookups only produce what they can reach), so its lookups are never wider.
        """
        if self.rounding_threshold_bits is None:
            return None
        return self._plan(
            [
                accumulator_ends(self._integer_weight(linear), input_range)
                for linear, input_range in zip(self.linears[:-1], self._input_ranges())
            ]
        )

    def _plan(self, ends) -> RoundingPlan:
        """The plan of these accumulator ranges (one ``(max, −min)`` pair per hidden layer,
        from pruning.accumulator_ends: each neuron's bounds.accumulator_range over the box of
        its input grid, from its weights' sums per sign, which the budget check takes too)."""
        return RoundingPlan(
            tuple(
                lsbs_for_threshold(-min_end.numpy(), max_end.numpy(), self.rounding_threshold_bits)
                for max_end, min_end in ends
            )
        )

    def _input_ranges(self) -> tuple[tuple[int, int], ...]:
        """Integer range ``(lo, hi)`` of each linear layer's input grid (zero points are 0; a
        signed grid's is taken symmetric, which contains it).

        Read from the quantizers once, when first asked: every training forward needs them,
        and each read of a Brevitas quantizer's attribute builds its dependencies anew.
        """
        if self._ranges is None:
            quantizers = (self.input_quant, *self.act_quants)
            bits = [self.n_input_bits] + [self.n_a_bits] * len(self.act_quants)
            grids = [
                Grid(n_bits, quantizer.act_quant.is_signed, quantizer.act_quant.is_narrow_range)
                for quantizer, n_bits in zip(quantizers, bits, strict=True)
            ]
            self._ranges = tuple(
                (-grid.max_abs if grid.signed else 0, grid.max_abs) for grid in grids
            )
        return self._ranges

    # -- accumulator budget --------------------------------------------------------------------

    def _max_abs_weight(self) -> int:
        return Grid(self.n_w_bits, signed=True, narrow=self.quant_narrow).max_abs

    def max_active_neurons(self) -> int:
        """Inputs per neuron that fit the budget whatever the weights (the worst case)."""
        max_weight = self._max_abs_weight()
        return min(
            max_terms(budget, max_weight, max(-lo, hi))
            for budget, (lo, hi) in zip(self.layer_budgets, self._input_ranges())
        )

    # -- pruning -------------------------------------------------------------------------------

    def _integer_weight(self, linear) -> torch.Tensor:
        """The layer's integer weights as Brevitas quantizes the current (masked) weight."""
        with torch.no_grad():
            return integer_values(linear.quant_weight())

    def weight_lr_limits(self) -> list[tuple[nn.Parameter, float]]:
        """Each linear layer's trained weight (under its mask, if it has one) with the largest
        learning rate it trains at: ``WEIGHT_LR_LIMIT / √fan_in`` (see there why)."""
        return [
            (raw_weight(linear), WEIGHT_LR_LIMIT / math.sqrt(fan_in))
            for linear, fan_in in zip(self.linears, self.unpruned_widths)
        ]

    def hidden_widths(self) -> list[int]:
        return [linear.out_features for linear in self.linears[:-1]]

    def with_state(self, state_dict: dict) -> SparseQuantNeuralNetwork:
        """A network with this one's arguments, in the layout of ``state_dict`` and holding it
        (what ``load_params`` needs: a checkpoint may hold masks, or pruned widths)."""
        n_hidden = len(self.linears) - 1
        try:
            widths = [len(state_dict[f"linears.{index}.bias"]) for index in range(n_hidden)]
        except KeyError as error:
            raise ValueError(f"The state has no {error}: not a state of this network.") from None
        try:
            return rebuild_network(self.rebuild_kwargs, widths, state_dict)
        except RuntimeError as error:
            raise ValueError(f"The state does not fit this network: {error}") from None

    @property
    def rebuild_kwargs(self) -> dict:
        """The constructor arguments that rebuild this network as it is now: its own, with the
        share of neurons pruned that ``prune()`` may have changed since."""
        return {**self.init_kwargs, "n_prune_neurons_percentage": self.n_prune_neurons_percentage}

    def __reduce__(self):
        """Brevitas quantizers are not picklable: rebuild from arguments, widths and state."""
        return (rebuild_network, (self.rebuild_kwargs, self.hidden_widths(), self.state_dict()))


class _ReluForwardOf(torch.autograd.Function):
    """``_ForwardOf(leaky_relu(y, RELU_GRADIENT_SLOPE), value)`` in one autograd node: the
    leaky ReLU's gradient at ``y``, written out (two nodes per hidden layer cost more than
    their arithmetic, issue 15)."""

    @staticmethod
    def forward(ctx, y, value):
        ctx.save_for_backward(y > 0)
        return value

    @staticmethod
    def backward(ctx, grad):
        (positive,) = ctx.saved_tensors
        return torch.where(positive, grad, grad * RELU_GRADIENT_SLOPE), None


class _ForwardOf(torch.autograd.Function):
    """``value`` forward, and the gradient goes to ``surrogate``: a straight-through estimator
    whose forward is exactly ``value`` (adding the difference in float would not be)."""

    @staticmethod
    def forward(ctx, surrogate, value):
        return value

    @staticmethod
    def backward(ctx, grad):
        return grad, None


def layer_widths(input_dim: int, n_layers: int, n_outputs: int, multiplier: int) -> list[int]:
    """[inputs, hidden..., outputs] of a network before pruning: every hidden layer has
    ``input_dim * multiplier`` neurons."""
    return [input_dim, *[input_dim * multiplier] * (n_layers - 1), n_outputs]


def rebuild_network(init_kwargs, hidden_widths, state_dict) -> SparseQuantNeuralNetwork:
    """The network of these constructor arguments in the layout of ``state_dict``: its hidden
    widths (pruning changes them) and, if it was saved while training, its masks.
    RuntimeError if the state does not fit."""
    module = SparseQuantNeuralNetwork(**init_kwargs)
    widths = [init_kwargs["input_dim"], *hidden_widths, init_kwargs["n_outputs"]]
    for index, linear in enumerate(module.linears):
        n_in, n_out = widths[index], widths[index + 1]
        if (linear.in_features, linear.out_features) != (n_in, n_out):
            module.linears[index] = sliced_linear(
                linear, rows=torch.arange(n_out), columns=torch.arange(n_in)
            )
        # a network pickled while it trains (pruning enabled) carries its masks
        mask = state_dict.get(f"linears.{index}.parametrizations.weight.0.mask")
        if mask is not None:
            parametrize.register_parametrization(
                module.linears[index], "weight", WeightMask(mask.clone())
            )
    missing, unexpected = module.load_state_dict(state_dict, strict=False)
    # Brevitas leaves out the scale of a quantizer that has not seen a batch yet
    uncalibrated = [key for key in missing if key.endswith("scaling_impl.value")]
    if unexpected or set(missing) - set(uncalibrated):
        raise RuntimeError(f"state does not fit the network: {missing=}, {unexpected=}")
    return module


_rebuild = rebuild_network
"""The name pickles written before rebuild_network was public refer to; they still load."""
