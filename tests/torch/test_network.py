"""SparseQuantNeuralNetwork: parameters, worst-case budget, per-neuron pruning."""

from __future__ import annotations

import copy
import functools

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch.nn.utils import parametrize

from qnn_sklearn.quantization.bounds import accumulator_range
from qnn_sklearn.torch import build_brevitas_qat_model
from qnn_sklearn.torch.compile import PlansItsRounding
from qnn_sklearn.torch.network import (
    SparseQuantNeuralNetwork,
    default_input_bits,
    layer_budgets,
)
from qnn_sklearn.torch.pruning import (
    accumulator_ends,
    any_over_budget,
    ends_over_budget,
    is_masked,
    weight_and_mask,
)


def _grid(n_bits: int, signed: bool, narrow: bool) -> range:
    if signed:
        return range(-(2 ** (n_bits - 1)) + int(narrow), 2 ** (n_bits - 1))
    return range(0, 2**n_bits - int(narrow))


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"n_layers": 0}, "n_layers"),
        ({"n_w_bits": 0}, "n_w_bits"),
        ({"n_a_bits": 0}, "n_a_bits"),
        ({"n_input_bits": 0}, "n_input_bits"),
        ({"n_w_bits": 1}, "n_w_bits must be an integer >= 2, got 1"),
        ({"n_a_bits": 1, "quant_signed": False}, "n_a_bits must be an integer >= 2, got 1"),
        ({"n_input_bits": 1}, "n_input_bits must be an integer >= 2, got 1"),
        ({"n_prune_neurons_percentage": 1.0}, "n_prune_neurons_percentage"),
        ({"n_accum_bits": 3}, "n_accum_bits"),
    ],
)
def test_invalid_parameters_raise(kwargs, message):
    params = {"input_dim": 4, "n_layers": 2, "n_outputs": 3, **kwargs}
    with pytest.raises(ValueError, match=message):
        SparseQuantNeuralNetwork(**params)


def _integer_extremes(quantizer) -> tuple[int, int]:
    """The smallest and largest integers a Brevitas quantizer outputs, on huge inputs."""
    x = torch.tensor([[-1e9, 1e9]])
    quantizer.train()(x)  # calibrates on this batch, like the first training step
    q = quantizer.eval()(x).int()
    return int(q.min()), int(q.max())


@settings(max_examples=25, deadline=None)
@given(
    n_w_bits=st.integers(1, 5),
    n_a_bits=st.integers(1, 5),
    n_accum_bits=st.integers(4, 12),
    narrow=st.booleans(),
    signed=st.booleans(),
    n_input_bits=st.one_of(st.none(), st.integers(1, 6)),
    rounding=st.one_of(st.none(), st.integers(2, 8)),
)
def test_max_active_neurons_is_the_worst_case(
    n_w_bits, n_a_bits, n_accum_bits, narrow, signed, n_input_bits, rounding
):
    """The constructor refuses exactly the 1-bit grids and the budgets that cannot hold one
    input; otherwise ``max_active_neurons()`` inputs at the largest weight and input
    integers fit every layer's budget (within ``n_accum_bits``), and one more overflows on
    some layer."""
    budgets = layer_budgets(3, n_accum_bits, rounding)
    assert max(budgets) == budgets[-1] == 2 ** (n_accum_bits - 1) - 1  # the output layer's
    input_bits = n_input_bits
    if input_bits is None:
        defaults = min(n_w_bits, n_a_bits) >= 2  # else the constructor refuses the grids first
        rule = (4, n_w_bits, n_a_bits, budgets[0], signed, narrow)
        input_bits = default_input_bits(*rule) if defaults else n_a_bits
    max_w = max(abs(v) for v in _grid(n_w_bits, True, narrow))
    input_max = max(abs(v) for v in _grid(input_bits, signed, signed))  # a signed input is narrow
    hidden_max = max(abs(v) for v in _grid(n_a_bits, False, narrow))  # after ReLU: unsigned
    too_few_bits = min(n_w_bits, n_a_bits, input_bits) < 2
    layer_inputs = (input_max, hidden_max, hidden_max)
    no_room = any(max_w * x > budget for x, budget in zip(layer_inputs, budgets))
    bits = {"n_w_bits": n_w_bits, "n_a_bits": n_a_bits, "n_accum_bits": n_accum_bits}
    grid = {"quant_narrow": narrow, "quant_signed": signed, "n_input_bits": n_input_bits}
    make = functools.partial(
        SparseQuantNeuralNetwork, 4, 3, 2, **bits, **grid, rounding_threshold_bits=rounding
    )
    if too_few_bits or no_room:
        with pytest.raises(ValueError, match=">= 2" if too_few_bits else "n_accum_bits"):
            make()
        return
    module = make()
    assert module.layer_budgets == budgets
    k = module.max_active_neurons()
    # the integers the layers really read: Brevitas' own input and activation quantizers
    input_abs = [
        max(map(abs, _integer_extremes(q))) for q in (module.input_quant, *module.act_quants)
    ]
    assert input_abs == list(layer_inputs)
    for x_abs, budget in zip(input_abs, budgets):  # k worst-case products, either sign, fit
        assert k * max_w * x_abs <= budget
    # one more input overflows some layer
    assert any((k + 1) * max_w * x_abs > budget for x_abs, budget in zip(input_abs, budgets))


def _train_masked(module: SparseQuantNeuralNetwork, x: torch.Tensor, after_step) -> None:
    """Five Adam steps on ``x`` with pruning on, ``after_step()`` after each."""
    module.enable_pruning()
    optimizer = torch.optim.Adam(module.parameters(), lr=0.05)
    for _ in range(5):
        optimizer.zero_grad()
        module(x).square().mean().backward()
        optimizer.step()
        after_step()


def _train_pruned(module: SparseQuantNeuralNetwork, x: torch.Tensor, after_step) -> None:
    """:func:`_train_masked`, then the pruning made permanent."""
    _train_masked(module, x, after_step)
    module.make_pruning_permanent()


@settings(max_examples=6, deadline=None)
@given(
    n_w_bits=st.integers(2, 4),
    n_a_bits=st.integers(2, 4),
    n_accum_bits=st.integers(8, 10),
    prune=st.sampled_from([0.0, 0.25]),
    rounding=st.sampled_from([None, "auto"]),
    seed=st.integers(0, 10_000),
)
def test_pruning_bounds_every_neuron(n_w_bits, n_a_bits, n_accum_bits, prune, rounding, seed):
    """After training steps and permanent pruning, each neuron fits its layer's budget exactly;
    with rounding, no layer rounds more bits than a full ``n_accum_bits`` range needs before
    the carry (its lookups stay at the threshold)."""
    torch.manual_seed(seed)
    module = SparseQuantNeuralNetwork(
        12,
        3,
        3,
        n_hidden_neurons_multiplier=4,
        n_w_bits=n_w_bits,
        n_a_bits=n_a_bits,
        n_accum_bits=n_accum_bits,
        n_prune_neurons_percentage=prune,
        rounding_threshold_bits=rounding,
    )
    x = torch.randn(64, 12)
    _train_pruned(module, x, after_step=module.refresh_pruning)

    budget = 2 ** (n_accum_bits - 1) - 1
    # a signed input grid is narrow (its bits by the input-width rule); activations after ReLU
    # are unsigned
    grids = [_grid(module.n_input_bits, True, True)] + [_grid(n_a_bits, False, False)] * 2
    for linear, grid, layer_budget in zip(module.linears, grids, module.layer_budgets):
        integer_weights = linear.quant_weight().int().to(torch.int64).numpy()
        # the narrow signed grid is symmetric; the unsigned one starts at 0
        low, high = accumulator_range(integer_weights, min(grid), max(grid))
        assert -layer_budget <= low.min() and high.max() <= layer_budget <= budget
    if rounding:
        removable = n_accum_bits - module.rounding_threshold_bits
        assert all(lsbs <= removable for lsbs in module.rounding_plan().lsbs)
    if prune:
        assert all(width <= 0.75 * 48 for width in module.hidden_widths())
    # The certified accumulators of the imported integer model fit n_accum_bits too.
    module.eval()
    integer_model = build_brevitas_qat_model(module, x.numpy())
    for report in integer_model.bitwidth_report():
        low, high = report["certified_range"]
        assert -budget <= low and high <= budget


@settings(max_examples=50, deadline=None)
@given(
    weights=st.lists(st.integers(-16, 15), min_size=1, max_size=40),
    n_inputs=st.integers(1, 8),
    grid=st.sampled_from([(0, 7), (0, 15), (-3, 3), (-15, 15), (-7, 7), (-4, 3), (-1, 6)]),
)
def test_accumulator_ends_are_the_box_range(weights, n_inputs, grid):
    """The training forward's per-sign ends (budget check and rounding plan) are exactly the
    range the integer model certifies (bounds.accumulator_range) on the same input box."""
    rows = len(weights) // n_inputs or 1
    weight = np.resize(np.array(weights, dtype=np.int64), (rows, n_inputs))
    max_end, min_end = accumulator_ends(torch.from_numpy(weight), grid)
    low, high = accumulator_range(weight, *grid)
    np.testing.assert_array_equal(max_end.numpy(), high)
    np.testing.assert_array_equal(-min_end.numpy(), low)
    for budget in {0, *np.abs(low), *high}:  # at each end: rows on the edge, others past it
        over = ends_over_budget((max_end, min_end), budget)
        np.testing.assert_array_equal(over.numpy(), (high > budget) | (-low > budget))
        assert any_over_budget((max_end, min_end), budget) == bool(over.any())


def test_removing_dead_neurons_keeps_the_function():
    """Four first-layer neurons lose every input. The two whose output is 0 and whose column
    the rounded next layer does not read go; the two that output a constant the next layer
    reads stay, since folding it into the bias would move that layer's rounding."""
    torch.manual_seed(0)
    module = SparseQuantNeuralNetwork(
        12, 3, 3, n_hidden_neurons_multiplier=4, rounding_threshold_bits=3
    )
    x = torch.randn(256, 12)
    _train_masked(module, x, after_step=module.enforce_budget)
    first, second = module.linears[0], module.linears[1]
    with torch.no_grad():
        first.parametrizations.weight[0].mask[:4] = 0
        first.bias[:2], first.bias[2:4] = 2.0, -2.0  # constants: positive, then 0
        # the next layer reads neurons 0 and 1 (large weights, below its largest), not 2 and 3
        second.parametrizations.weight[0].mask[:, 2:4] = 0
        second.parametrizations.weight.original[:, :2] = 0.9 * second.weight.abs().max()
    module.eval()
    assert all(module.rounding_plan().lsbs)
    with torch.no_grad():
        before = module(x)
        module.make_pruning_permanent()
        assert torch.equal(module(x), before)
    kept_biases = module.linears[0].bias
    assert int((kept_biases == 2.0).sum()) == 2 and not (kept_biases == -2.0).any()


def test_structured_pruning_removes_the_dropped_neurons():
    """A neuron that structured pruning drops goes with its inputs and its outputs when the
    masks go on; each layer keeps its rows of largest norm, chosen before any slicing."""
    torch.manual_seed(0)
    module = SparseQuantNeuralNetwork(6, 3, 2, n_prune_neurons_percentage=0.5)
    before = [linear.weight.detach().clone() for linear in module.linears]
    module.enable_pruning()
    assert module.hidden_widths() == [12, 12]
    kept = [torch.sort(torch.argsort(w.norm(dim=1))[12:]).values for w in before[:-1]]
    expected = [before[0][kept[0]], before[1][kept[1]][:, kept[0]], before[2][:, kept[1]]]
    for linear, weight in zip(module.linears, expected):
        assert torch.equal(linear.parametrizations.weight.original, weight)
    module.enable_pruning()  # a refresh drops nothing more
    assert module.hidden_widths() == [12, 12]


def test_structured_pruning_is_a_share_of_the_unpruned_width():
    """Training again from a pruned network (partial_fit) keeps its neurons: the share is of
    the width before pruning, not of the layer's current one."""
    torch.manual_seed(0)
    module = SparseQuantNeuralNetwork(6, 3, 2, n_prune_neurons_percentage=0.5)
    module.enable_pruning()
    module.make_pruning_permanent()
    assert module.hidden_widths() == [12, 12]
    module.enable_pruning()
    for linear in module.linears[:-1]:
        assert (linear.parametrizations.weight[0].mask.sum(dim=1) > 0).all()
    module.make_pruning_permanent()
    assert module.hidden_widths() == [12, 12]
    module.n_prune_neurons_percentage = 0.75  # what prune(X, y, 0.75) sets: 6 of the 24 left
    module.enable_pruning()
    module.make_pruning_permanent()
    first, second = module.hidden_widths()
    assert first == 6 and second <= 6  # a neuron left without inputs goes too


def test_mode_switch_reaches_every_submodule():
    """``train``/``eval`` set the flag of every module inside, Brevitas' and the masks' too,
    as ``nn.Module.train`` does (the network sets them in one flat walk)."""
    module = SparseQuantNeuralNetwork(6, 3, 2)
    module.enable_pruning()
    assert module.eval() is module
    assert not any(submodule.training for submodule in module.modules())
    module.train()
    assert all(submodule.training for submodule in module.modules())
    module.train(False)
    assert not any(submodule.training for submodule in module.modules())
    with pytest.raises(ValueError, match="boolean"):
        module.train("yes")


def test_weight_and_mask_are_what_the_parametrization_api_names():
    """The forward reads a layer's weight and mask from the modules' own dictionaries (for
    speed); they are the very tensors torch's parametrization API names, masked or not."""
    module = SparseQuantNeuralNetwork(6, 3, 2)
    linear = module.linears[0]
    raw, mask = weight_and_mask(linear)
    assert raw is linear.weight and mask is None and not is_masked(linear)
    module.enable_pruning()
    linear = module.linears[0]
    raw, mask = weight_and_mask(linear)
    assert is_masked(linear) and parametrize.is_parametrized(linear, "weight")
    assert raw is linear.parametrizations.weight.original
    assert mask is linear.parametrizations.weight[0].mask


@pytest.mark.parametrize("activation", [torch.nn.ReLU(), torch.nn.Tanh()])
def test_training_gradient_of_a_rounded_activation(activation):
    """Forward: the activation of the rounded accumulator, exactly. Gradient in training:
    the activation's at the unrounded one, a ReLU passing a tenth on its zero side; in
    evaluation, straight through the rounding only."""
    module = SparseQuantNeuralNetwork(4, 2, 2)
    y = torch.linspace(-2, 2, 41, requires_grad=True)
    shift = torch.where(y.detach().abs() < 0.5, -y.detach(), 0.3)  # near 0: rounded to 0
    for training in (True, False):
        module.train(training)
        y.grad = None
        rounded = y + shift
        out = module._activate(activation, y, shift)
        assert torch.equal(out, activation(rounded.detach()))
        out.sum().backward()
        if not training:
            expected = torch.autograd.grad(activation(rounded).sum(), y)[0]
        elif isinstance(activation, torch.nn.ReLU):
            expected = torch.where(y.detach() > 0, 1.0, 0.1)
        else:
            expected = 1 - torch.tanh(y.detach()) ** 2
        torch.testing.assert_close(y.grad, expected)


def test_copy_while_pruning_keeps_masks():
    """A network copied mid-training (masks on, e.g. by a checkpoint callback) is the same
    network: same masks, same outputs, and it can still be made permanent."""
    import copy
    import pickle

    torch.manual_seed(0)
    module = SparseQuantNeuralNetwork(6, 3, 2, n_hidden_neurons_multiplier=8, n_accum_bits=6)
    module.enable_pruning()
    x = torch.randn(32, 6)
    module(x)  # one training forward: the quantizers start calibrating
    for copied in (copy.deepcopy(module), pickle.loads(pickle.dumps(module))):
        module.eval(), copied.eval()
        masks = [linear.parametrizations.weight[0].mask for linear in module.linears]
        copied_masks = [linear.parametrizations.weight[0].mask for linear in copied.linears]
        assert all(torch.equal(a, b) for a, b in zip(masks, copied_masks))
        assert any(not bool(mask.all()) for mask in masks)  # the budget did prune something
        with torch.no_grad():
            assert torch.equal(module(x), copied(x))
        copied.make_pruning_permanent()


def _trained_network(seed: int, **kwargs) -> tuple[SparseQuantNeuralNetwork, torch.Tensor]:
    """A 12-input network after a few pruned training steps, permanent and in eval mode."""
    torch.manual_seed(seed)
    module = SparseQuantNeuralNetwork(12, 3, 3, n_hidden_neurons_multiplier=4, **kwargs)
    x = torch.randn(256, 12)
    _train_pruned(module, x, after_step=module.enforce_budget)
    return module.eval(), x


@settings(max_examples=6, deadline=None)
@given(
    threshold=st.integers(2, 5),
    n_accum_bits=st.integers(7, 10),
    activation=st.sampled_from([torch.nn.ReLU, torch.nn.Tanh]),
    seed=st.integers(0, 10_000),
)
def test_trained_rounding_is_the_integer_models(threshold, n_accum_bits, activation, seed):
    """The network rounds its accumulators as the integer model does: same outputs, and
    lookups at most ``threshold`` bits wide."""
    module, x = _trained_network(
        seed,
        n_accum_bits=n_accum_bits,
        activation_function=activation,
        rounding_threshold_bits=threshold,
    )
    assert isinstance(module, PlansItsRounding)
    assert not isinstance(torch.nn.Linear(2, 2), PlansItsRounding)
    lsbs = list(module.rounding_plan().lsbs)
    integer_model = build_brevitas_qat_model(module, x.numpy())
    reports = integer_model.bitwidth_report()
    assert [report["lsbs_to_remove"] for report in reports[:-1]] == lsbs
    assert all(report["pbs_precision"] <= threshold for report in reports[:-1])
    rows = torch.cat([x, 30 * torch.randn(256, 12)])  # also far outside the training range
    with torch.no_grad():
        np.testing.assert_allclose(integer_model.forward(rows.numpy()), module(rows), atol=1e-4)


def test_trained_rounding_changes_the_network():
    module, x = _trained_network(0, n_accum_bits=8, rounding_threshold_bits=3)
    assert all(lsbs > 0 for lsbs in module.rounding_plan().lsbs)
    with torch.no_grad():
        rounded = module(x)
        module.rounding_threshold_bits = None
        assert not torch.allclose(module(x), rounded, atol=1e-4)


def test_trained_rounding_and_a_post_training_threshold_conflict():
    module, x = _trained_network(0, rounding_threshold_bits=4)
    assert any(module.rounding_plan().lsbs)
    with pytest.raises(ValueError, match="not both"):
        build_brevitas_qat_model(module, x.numpy(), rounding_threshold_bits=4)


def test_auto_rounding_keeps_two_bits_more_than_the_activations_without_carry():
    """3-bit activations: 5 kept bits; the hidden layers' budget ±123 (not ±127) rounds 3
    bits away into 5-bit lookups, where ±127 would round 4 away or read 6 bits."""
    module = SparseQuantNeuralNetwork(12, 3, 3, n_a_bits=3, rounding_threshold_bits="auto")
    assert module.rounding_threshold_bits == 5
    assert module.layer_budgets == (123, 123, 127)
    with pytest.raises(ValueError, match="rounding_threshold_bits"):
        SparseQuantNeuralNetwork(12, 3, 3, rounding_threshold_bits=0)


@pytest.mark.parametrize(
    "input_dim, bits, expected",
    [
        (4, {}, 5),  # few features: 5-bit inputs
        (16, {}, 5),
        (17, {}, 4),  # wider inputs: each bit halves a first-layer neuron's inputs
        (784, {}, 4),
        (4, {"n_a_bits": 6, "n_accum_bits": 16}, 6),  # never below the activations
        (4, {"n_w_bits": 5}, 3),  # 5-bit weight × 5-bit input (16 × 15) overflows 8 bits
    ],
)
def test_default_input_bits_follow_the_input_width(input_dim, bits, expected):
    module = SparseQuantNeuralNetwork(input_dim, 2, 3, **bits)
    assert module.n_input_bits == expected
    assert module.input_quant.act_quant.bit_width() == expected
    given = SparseQuantNeuralNetwork(input_dim, 2, 3, n_input_bits=2, **bits)
    assert given.input_quant.act_quant.bit_width() == 2


@pytest.mark.parametrize(
    "input_dim, given, expected",
    [
        (4, None, 0.0),  # narrow inputs: no structured pruning
        (24, None, 0.0),
        (25, None, 0.6),  # wider ones: 60% of the hidden neurons
        (64, None, 0.6),
        (64, 0.0, 0.0),  # the user's share wins, either way
        (4, 0.25, 0.25),
    ],
)
def test_default_pruned_share_follows_the_input_width(input_dim, given, expected):
    module = SparseQuantNeuralNetwork(input_dim, 3, 2, n_prune_neurons_percentage=given)
    assert module.n_prune_neurons_percentage == expected
    module.enable_pruning()
    unpruned = module.unpruned_widths[1]
    assert module.hidden_widths() == [unpruned - round(expected * unpruned)] * 2


@pytest.mark.parametrize(
    "input_dim, given, rounding, expected",
    [
        (4, None, "auto", 8),  # narrow inputs: 8-bit accumulators
        (24, None, "auto", 8),
        (25, None, "auto", 9),  # wider ones, rounded before their lookups: 9 bits
        (64, None, 5, 9),
        (64, None, None, 8),  # unrounded, a lookup would read all 9 bits
        (64, 8, "auto", 8),  # the user's bits win, either way
        (4, 12, None, 12),
    ],
)
def test_default_accum_bits_follow_the_input_width(input_dim, given, rounding, expected):
    """The layers' budgets follow the resolved bits; the constructor's arguments keep the
    user's, so a copy (rebuilt from them) resolves the same bits."""
    module = SparseQuantNeuralNetwork(
        input_dim, 3, 2, n_accum_bits=given, rounding_threshold_bits=rounding
    )
    assert module.n_accum_bits == expected
    assert module.init_kwargs["n_accum_bits"] == given
    assert module.layer_budgets == layer_budgets(3, expected, module.rounding_threshold_bits)
    assert copy.deepcopy(module).n_accum_bits == expected


def test_input_grid_bits_apart_from_the_activations():
    """n_input_bits sets the client's input grid only; the integer model imports it, and the
    network and the integer model still agree."""
    module, x = _trained_network(0, n_a_bits=4, n_input_bits=2, rounding_threshold_bits=5)
    assert module.input_quant.act_quant.bit_width() == 2
    assert all(quant.act_quant.bit_width() == 4 for quant in module.act_quants)
    integer_model = build_brevitas_qat_model(module, x.numpy())
    options = integer_model.input_quantizer.options
    assert (options.n_bits, options.qmax - options.qmin) == (2, 2)  # signed and narrow: -1..1
    rows = torch.cat([x, 30 * torch.randn(256, 12)])
    with torch.no_grad():
        np.testing.assert_allclose(integer_model.forward(rows.numpy()), module(rows), atol=1e-4)
