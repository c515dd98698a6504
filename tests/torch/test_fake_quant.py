"""The training forward's quantizers (fake_quant.py) compute exactly what Brevitas' do.

Two networks built from one seed run side by side: one through the network's forward, the
other through Brevitas' own modules (its quantizers and QuantTensor product, as the forward
did before fake_quant.py). Values must be equal bit for bit; gradients equal up to float
rounding; the quantizers' statistics (counter, buffer) must advance alike.
"""

from __future__ import annotations

import pytest
import torch

from qnn_sklearn.torch import fake_quant
from qnn_sklearn.torch.network import SparseQuantNeuralNetwork
from qnn_sklearn.torch.pruning import accumulator_ends, integer_values, is_masked, raw_weight


def _twins(**kwargs) -> tuple[SparseQuantNeuralNetwork, SparseQuantNeuralNetwork]:
    twins = []
    for _ in range(2):
        torch.manual_seed(0)
        twins.append(SparseQuantNeuralNetwork(8, 3, 2, n_hidden_neurons_multiplier=4, **kwargs))
    return twins[0], twins[1]


def _quantizers(module):
    return (module.input_quant, *module.act_quants)


def _scaling(quant_identity):
    return quant_identity.act_quant.fused_activation_quant_proxy.tensor_quant.scaling_impl


def _brevitas_forward(module: SparseQuantNeuralNetwork, x: torch.Tensor):
    """The network's forward on Brevitas' modules: (output, weights, activations) as Brevitas
    QuantTensors, the input's quantization first among the activations."""
    if any(is_masked(linear) for linear in module.linears):
        module.enforce_budget()  # what the forward does while the masks are on
    x = module.input_quant(x)
    weights = [linear.quant_weight() for linear in module.linears]
    lsbs = [0] * len(module.act_quants)
    if module.rounding_threshold_bits is not None:
        ends = [
            accumulator_ends(integer_values(weight), input_range)
            for weight, input_range in zip(weights[:-1], module._input_ranges())
        ]
        lsbs = module._plan(ends).lsbs
    activations = [x]
    for linear, weight, layer_lsbs, activation, act_quant in zip(
        module.linears, weights, lsbs, module.activations, module.act_quants
    ):
        y = _brevitas_product(module, linear, weight, x)
        shift = module._rounding_shift(y, linear, weight, x, layer_lsbs)
        x = act_quant(module._activate(activation, y, shift))
        activations.append(x)
    output = _brevitas_product(module, module.linears[-1], weights[-1], x)
    return output, weights, activations


def _brevitas_product(module, linear, weight, x):
    """Brevitas' QuantTensor product, which the network's equals."""
    product = linear.inner_forward_impl(x, weight, linear.bias).value
    assert torch.equal(module._product(linear, weight, x), product)
    return product


def _fast_forward(module: SparseQuantNeuralNetwork, x: torch.Tensor, monkeypatch):
    """The network's forward, with what its quantizers returned: (output, each layer's last
    quantized weight, activations)."""
    weights, activations = {}, []
    weight, activation = fake_quant.weight, fake_quant.activation

    def recording_weight(linear):
        weights[id(linear)] = weight(linear)
        return weights[id(linear)]

    def recording_activation(quant_identity, x):
        activations.append(activation(quant_identity, x))
        return activations[-1]

    with monkeypatch.context() as patch:
        patch.setattr(fake_quant, "weight", recording_weight)
        patch.setattr(fake_quant, "activation", recording_activation)
        output = module(x)
    return output, [weights[id(linear)] for linear in module.linears], activations


def _assert_same_step(fast, brevitas, x, monkeypatch):
    """One forward (and in train mode a backward) of each twin: equal values and state, close
    gradients."""
    for module in (fast, brevitas):
        module.zero_grad(set_to_none=True)
    output, weights, activations = _fast_forward(fast, x, monkeypatch)
    expected, expected_weights, expected_activations = _brevitas_forward(brevitas, x)
    assert torch.equal(output, expected)
    assert len(activations) == len(expected_activations)
    for got, want in zip(weights + activations, expected_weights + expected_activations):
        assert torch.equal(got.value, want.value)
        assert torch.equal(got.scale, want.scale)
        assert torch.equal(got.integers, integer_values(want).to(got.integers.dtype))
    for got, want in zip(_quantizers(fast), _quantizers(brevitas)):
        assert _scaling(got).counter == _scaling(want).counter
        assert torch.equal(_scaling(got).buffer, _scaling(want).buffer)
        assert torch.equal(_scaling(got).value, _scaling(want).value)
    for got, want in zip(fast.linears, brevitas.linears):
        assert torch.equal(got.weight, want.weight)  # the budget cut the same weights
    if not fast.training:
        return
    target = torch.linspace(-1, 1, output.numel()).reshape(output.shape)
    (output * target).sum().backward()
    (expected * target).sum().backward()
    tensors = [
        *[(raw_weight(a), raw_weight(b)) for a, b in zip(fast.linears, brevitas.linears)],
        *[(a.bias, b.bias) for a, b in zip(fast.linears, brevitas.linears)],
        *[
            (_scaling(a).value, _scaling(b).value)
            for a, b in zip(_quantizers(fast), _quantizers(brevitas))
        ],
    ]
    for got, want in tensors:
        assert (got.grad is None) == (want.grad is None)
        if got.grad is not None:
            # a scale's gradient sums a whole layer's terms, in another order than autograd's
            assert torch.allclose(got.grad, want.grad, rtol=1e-5, atol=1e-5)


def _sync(fast, brevitas, learning_rate=0.05):
    """A gradient step on the fast twin, copied to the other: the twins stay one network."""
    with torch.no_grad():
        for got, want in zip(fast.parameters(), brevitas.parameters()):
            if got.grad is not None:
                got.sub_(learning_rate * got.grad.sign())
            want.copy_(got)


def _to_step(module, step: str) -> None:
    """Set every activation quantizer's counter: ``collect`` − 1 collects one last batch,
    ``collect`` hands the statistic over to the parameter, ``collect`` + 1 trains it."""
    for quantizer in _quantizers(module):
        scaling = _scaling(quantizer)
        offset = {"last batch": -1, "hand-over": 0, "learned": 1}[step]
        scaling.counter = scaling.collect_stats_steps + offset


@pytest.mark.parametrize("bits", [2, 3, 4])
@pytest.mark.parametrize("narrow", [False, True])
@pytest.mark.parametrize("rounding_threshold_bits", [None, 4])
@pytest.mark.parametrize("masked", [False, True])
def test_fast_forward_is_brevitas(bits, narrow, rounding_threshold_bits, masked, monkeypatch):
    """Train and eval mode, through every phase of the activation quantizers: the first batch,
    a later one (momentum), the last statistics, the hand-over to the learned scale and its
    training; with and without pruning masks, rounding on and off."""
    _assert_same_training(bits, narrow, rounding_threshold_bits, masked, monkeypatch)


@pytest.mark.parametrize("narrow", [False, True])
def test_fast_forward_is_brevitas_on_signed_activations(narrow, monkeypatch):
    """After a Tanh the hidden grids are signed (narrow or not), as the input's is."""
    fast = _assert_same_training(3, narrow, 4, True, monkeypatch, activation_function=torch.nn.Tanh)
    assert all(quantizer.act_quant.is_signed for quantizer in fast.act_quants)


def _assert_same_training(bits, narrow, rounding_threshold_bits, masked, monkeypatch, **kwargs):
    """Twins through a few training steps, compared at each (see the test above); the fast
    one."""
    fast, brevitas = _twins(
        n_w_bits=bits,
        n_a_bits=bits,
        n_accum_bits=2 * bits + 1,  # two inputs at the largest integers: the masks cut
        quant_narrow=narrow,
        rounding_threshold_bits=rounding_threshold_bits,
        **kwargs,
    )
    if masked:
        fast.enable_pruning(), brevitas.enable_pruning()
        masks = [linear.parametrizations.weight[0].mask for linear in fast.linears]
        assert not all(bool(mask.all()) for mask in masks)
    generator = torch.Generator().manual_seed(1)
    for step in ("first", "second", "last batch", "hand-over", "learned", "learned"):
        if step in ("last batch", "hand-over", "learned"):
            _to_step(fast, step), _to_step(brevitas, step)
        x = 2 * torch.randn(64, 8, generator=generator)
        for mode in ("train", "eval"):
            fast.train(mode == "train"), brevitas.train(mode == "train")
            _assert_same_step(fast, brevitas, x, monkeypatch)
        fast.train(), brevitas.train()
        _sync(fast, brevitas)
        _assert_same_step(fast.eval(), brevitas.eval(), x, monkeypatch)  # after the step
        fast.train(), brevitas.train()
    return fast


def test_the_quantizers_follow_a_state_dict_load(monkeypatch):
    """Brevitas builds a layer's quantizer anew when a state dict is loaded (a best state
    restored, a checkpoint): the fast forward then reads the new one."""
    fast, brevitas = _twins(rounding_threshold_bits=4)
    x = torch.randn(64, 8)
    _assert_same_step(fast, brevitas, x, monkeypatch)
    _sync(fast, brevitas)
    state = {key: value.clone() for key, value in fast.state_dict().items()}
    _assert_same_step(fast, brevitas, x, monkeypatch)
    _sync(fast, brevitas)
    for module in (fast, brevitas):
        module.load_state_dict(state)
    for mode in (True, False):
        fast.train(mode), brevitas.train(mode)
        _assert_same_step(fast, brevitas, x, monkeypatch)


def test_refuses_a_quantizer_it_does_not_compute():
    from brevitas import nn as qnn
    from brevitas.quant import Int8WeightPerChannelFloat

    linear = qnn.QuantLinear(4, 2, bias=True, weight_quant=Int8WeightPerChannelFloat)
    with pytest.raises(TypeError, match="does not compute"):
        fake_quant.weight(linear)


def test_ties_round_half_to_even_as_brevitas():
    """Halves are where rounding rules differ; both quantizers meet them at a scale of 1."""
    torch.manual_seed(0)
    module = SparseQuantNeuralNetwork(8, 2, 2, n_w_bits=3, n_a_bits=3)
    halves = torch.tensor([-3.5, -2.5, -1.5, -0.5, 0.5, 1.5, 2.5, 3.5])
    linear = module.linears[0]
    with torch.no_grad():
        linear.weight.copy_(halves.repeat(linear.out_features, 1))
        linear.weight[0, 0] = 4.0  # max |w| over the 3-bit threshold 4: scale 1
    got, want = fake_quant.weight(linear), linear.quant_weight()
    assert torch.equal(got.value, want.value) and torch.equal(got.scale, want.scale)
    assert torch.equal(got.value[1], torch.tensor([-4.0, -2, -2, 0, 0, 2, 2, 3]))
    quantizer = module.act_quants[0]
    _scaling(quantizer).counter = _scaling(quantizer).collect_stats_steps + 1
    with torch.no_grad():
        _scaling(quantizer).value.fill_(7.0)  # the unsigned 3-bit threshold: scale 1
    x = halves.abs()[None]
    for mode in (True, False):
        quantizer.train(mode)
        assert torch.equal(fake_quant.activation(quantizer, x).value, quantizer(x).value)
    assert torch.equal(
        fake_quant.activation(quantizer, x).value[0, :4], torch.tensor([4.0, 2, 2, 0])
    )


@pytest.mark.parametrize("outputs", [("value",), ("scale",), ("value", "scale")])
@pytest.mark.parametrize("step", ["second", "learned"])
def test_each_output_gets_brevitas_gradients(outputs, step):
    """A quantizer's value or its scale alone carrying the loss, or both: a gradient that
    never reaches an output is left unmaterialized, and each input's gradient is still
    Brevitas'."""
    fast, brevitas = _twins()
    x = 2 * torch.randn(64, 8 * 4, generator=torch.Generator().manual_seed(1))
    if step == "learned":
        _to_step(fast, step), _to_step(brevitas, step)
    else:  # the statistic of a batch, after the first
        fast.act_quants[0](x), brevitas.act_quants[0](x)
    fast_x, brevitas_x = x.clone().requires_grad_(), x.clone().requires_grad_()
    got = [fake_quant.weight(fast.linears[0]), fake_quant.activation(fast.act_quants[0], fast_x)]
    want = [brevitas.linears[0].quant_weight(), brevitas.act_quants[0](brevitas_x)]
    for fast_tensor, brevitas_tensor in zip(got, want):
        sum(getattr(fast_tensor, output).sum() for output in outputs).backward()
        sum(getattr(brevitas_tensor, output).sum() for output in outputs).backward()
    scale_parameters = [_scaling(twin.act_quants[0]).value for twin in (fast, brevitas)]
    for got_grad, want_grad in [
        (fast.linears[0].weight.grad, brevitas.linears[0].weight.grad),
        (fast_x.grad, brevitas_x.grad),
        (scale_parameters[0].grad, scale_parameters[1].grad),
    ]:
        assert (got_grad is None) == (want_grad is None)
        if got_grad is not None:
            assert torch.allclose(got_grad, want_grad, rtol=1e-5, atol=1e-6)
