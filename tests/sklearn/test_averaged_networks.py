"""n_networks: networks trained side by side, each on its own loss and quantizers, averaged in
one circuit (torch/averaged.py)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch.nn import functional as F

import qnn_sklearn
from qnn_sklearn import NeuralNetClassifier, NeuralNetRegressor
from qnn_sklearn.deployment import FHEModelClient, FHEModelDev, FHEModelServer
from qnn_sklearn.postprocessing import softmax
from qnn_sklearn.quantization.stages import BlockMean, stage_from_json
from qnn_sklearn.sklearn import saved_network
from qnn_sklearn.torch import build_brevitas_qat_model
from qnn_sklearn.torch.averaged import AveragedNetworks
from qnn_sklearn.torch.network import SparseQuantNeuralNetwork

SMALL = {"module__n_layers": 3, "module__n_hidden_neurons_multiplier": 1, "max_epochs": 30}
"""Three layers (two rounded hidden layers per network) of 4 neurons: few bootstraps."""


@pytest.fixture(scope="module")
def averaged(iris_split, fit_classifier, insecure_fhe_configuration):
    """Three averaged iris networks, compiled (insecure key cache)."""
    X_train, _, y_train, _ = iris_split
    model = fit_classifier(X_train, y_train, n_networks=3, **SMALL)
    model.compile(X_train, configuration=insecure_fhe_configuration)
    return model


def test_the_integer_model_is_the_mean_of_each_network_s_own(averaged, iris_split):
    """One circuit's output, dequantized block by block and averaged, equals the mean of the
    networks' integer models imported one by one; each network's bootstraps add up, and the
    torch forward predicts what the integer model predicts."""
    _, X_test, _, _ = iris_split
    networks = averaged.module_.networks
    assert isinstance(averaged.module_, AveragedNetworks) and len(networks) == 3
    singles = [build_brevitas_qat_model(network, X_test[:1]) for network in networks]
    np.testing.assert_allclose(
        averaged.quantized_module_.forward(X_test),
        np.mean([single.forward(X_test) for single in singles], axis=0),
        rtol=0,
        atol=1e-12,
    )
    # one lookup per hidden neuron, of every network
    assert averaged.fhe_report()["pbs_count"] == sum(
        sum(widths) for widths in averaged.module_.hidden_widths()
    )
    torch_labels = averaged.forward(X_test.astype(np.float32)).argmax(1).numpy()
    np.testing.assert_array_equal(torch_labels, averaged.predict_proba(X_test).argmax(1))


def test_simulation_and_a_deployed_fhe_run_equal_the_clear_model(averaged, iris_split, tmp_path):
    """Simulation on inputs 100σ out, and real FHE through the client and server archives
    (whose output stages carry the average), equal the clear integer model."""
    X_train, X_test, _, _ = iris_split
    X_extreme = np.random.default_rng(0).normal(size=(200, X_train.shape[1])) * 100
    np.testing.assert_array_equal(
        averaged.predict(X_extreme, fhe="simulate"), averaged.predict(X_extreme)
    )
    FHEModelDev(tmp_path / "model", averaged).save()
    client = FHEModelClient(tmp_path / "model", key_dir=tmp_path / "keys")
    client.generate_private_and_evaluation_keys()
    rows = np.concatenate([X_test[:1], X_extreme[:1]])
    result = (
        FHEModelServer(tmp_path / "model")
        .load()
        .run(client.quantize_encrypt_serialize(rows), client.get_serialized_evaluation_keys())
    )
    np.testing.assert_array_equal(
        client.deserialize_decrypt_dequantize(result), averaged.predict_proba(rows)
    )


def test_each_network_trains_on_its_own_loss(iris_split):
    """In training the forward gives one output per network, and the loss is the sum of each
    network's loss: no network's gradient depends on another's output."""
    X_train, _, y_train, _ = iris_split
    model = NeuralNetClassifier(random_state=0, n_networks=2, **{**SMALL, "max_epochs": 1})
    model.fit(X_train, y_train)
    model.module_.train()
    outputs = model.module_(torch.as_tensor(X_train[:16], dtype=torch.float32))
    assert outputs.shape == (16, 2, 3)
    targets = torch.as_tensor(model.label_encoder_.transform(y_train[:16]))
    expected = F.cross_entropy(outputs[:, 0], targets) + F.cross_entropy(outputs[:, 1], targets)
    torch.testing.assert_close(model.get_loss(outputs, targets), expected)
    model.module_.eval()
    torch.testing.assert_close(
        model.module_(torch.as_tensor(X_train[:16], dtype=torch.float32)), outputs.mean(dim=1)
    )


def test_the_first_network_is_the_one_a_single_fit_starts_from():
    sizes = {"module__input_dim": 4, "module__n_outputs": 3}
    single = NeuralNetClassifier(**SMALL, **sizes)
    averaged = NeuralNetClassifier(n_networks=2, **SMALL, **sizes)
    torch.manual_seed(3)
    single.initialize()
    torch.manual_seed(3)
    averaged.initialize()
    first = averaged.module_.networks[0].state_dict()
    for name, tensor in single.module_.state_dict().items():
        torch.testing.assert_close(first[name], tensor)


def test_a_regressor_averages_its_networks_predictions():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(300, 3)).astype(np.float32)
    y = X @ np.array([0.5, -1.0, 0.25]) + 0.1 * rng.normal(size=300)
    settings = {**SMALL, "module__n_hidden_neurons_multiplier": 4, "max_epochs": 100}
    model = NeuralNetRegressor(random_state=0, n_networks=2, **settings).fit(X, y)
    networks = model.module_.networks
    singles = [build_brevitas_qat_model(network, X[:1]) for network in networks]
    np.testing.assert_allclose(
        model.predict(X),
        np.mean([single.forward(X)[:, 0] for single in singles], axis=0),
        rtol=0,
        atol=1e-12,
    )
    assert model.score(X, y) > 0.5


def test_a_checkpoint_reloads_the_averaged_networks(iris_split, tmp_path):
    """``load_params`` rebuilds each network to its saved layout; the reloaded estimator
    predicts as the saved one."""
    X_train, X_test, y_train, _ = iris_split
    model = NeuralNetClassifier(random_state=0, n_networks=2, **SMALL).fit(X_train, y_train)
    model.save_params(f_params=tmp_path / "params.pt")
    other = NeuralNetClassifier(random_state=1, n_networks=2, **SMALL).fit(X_train, y_train)
    other.load_params(f_params=tmp_path / "params.pt")
    np.testing.assert_array_equal(other.predict_proba(X_test), model.predict_proba(X_test))


@pytest.mark.parametrize("n_networks", [0, 65, 2.0, True, "3"], ids=repr)
def test_invalid_n_networks_is_refused_before_training(iris_split, n_networks):
    X_train, _, y_train, _ = iris_split
    model = NeuralNetClassifier(n_networks=n_networks, **SMALL)
    with pytest.raises(ValueError, match="n_networks must be"):
        model.fit(X_train, y_train)
    assert not model.initialized_


def test_n_networks_needs_the_estimators_network(iris_split):
    class Linear(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.linear = torch.nn.Linear(4, 3)

        def forward(self, x):
            return self.linear(x)

    X_train, _, y_train, _ = iris_split
    with pytest.raises(ValueError, match="Set n_networks=1"):
        NeuralNetClassifier(module=Linear, n_networks=2).fit(X_train, y_train)


def test_prune_and_copies_keep_one_input_grid(averaged, iris_split):
    """``prune`` (a deep copy, then training) cuts every network, and the copy's networks still
    read one input quantizer."""
    X_train, _, y_train, _ = iris_split
    pruned = averaged.prune(X_train, y_train, 0.5)
    for widths, unpruned in zip(pruned.module_.hidden_widths(), averaged.module_.hidden_widths()):
        assert all(width <= 2 for width in widths) and widths != unpruned
    first, *others = pruned.module_.networks
    assert all(network.input_quant is first.input_quant for network in others)


def test_dump_and_load_keep_the_averaged_networks(averaged, iris_split, tmp_path):
    """The file holds each network; the loaded estimator predicts as the dumped one, and its
    networks read one input quantizer."""
    _, X_test, _, _ = iris_split
    averaged.dump(tmp_path / "model.qnn")
    loaded = qnn_sklearn.load(tmp_path / "model.qnn")
    assert isinstance(loaded.module_, AveragedNetworks) and loaded.n_networks == 3
    np.testing.assert_array_equal(loaded.predict_proba(X_test), averaged.predict_proba(X_test))
    first, *others = loaded.module_.networks
    assert all(network.input_quant is first.input_quant for network in others)


def _drop_a_network(manifest):
    manifest["networks"].pop()


def _other_configuration(manifest):
    manifest["networks"][1]["init_kwargs"]["value"]["n_a_bits"] = 4


def _too_many_networks(manifest):
    manifest["params"]["n_networks"] = 1000


def _single_network_entry(manifest):
    manifest["network"] = manifest.pop("networks")[0]


@pytest.mark.parametrize(
    "change, message",
    [
        (_drop_a_network, "must be a list of n_networks=3"),
        (_other_configuration, "init_kwargs differ"),
        (_too_many_networks, "n_networks must be in 1..64"),
        (_single_network_entry, "must be a list of n_networks=3"),
    ],
    ids=lambda value: getattr(value, "__name__", ""),
)
def test_a_crafted_averaged_file_is_refused(averaged, tmp_path, rewrite_manifest, change, message):
    averaged.dump(tmp_path / "model.qnn")
    with pytest.raises(ValueError, match=message):
        qnn_sklearn.load(rewrite_manifest(tmp_path / "model.qnn", change))


def test_averaged_networks_count_against_the_weight_limit(averaged, tmp_path, monkeypatch):
    """The limit on the weights a file may declare holds over all its networks: three
    networks of half the limit each are refused."""
    averaged.dump(tmp_path / "model.qnn")
    n_weights = sum(
        linear.in_features * linear.out_features
        for linear in SparseQuantNeuralNetwork(**averaged.module_.init_kwargs).linears
    )
    monkeypatch.setattr(saved_network, "MAX_NETWORK_WEIGHTS", 2 * n_weights)
    with pytest.raises(ValueError, match="3 network\\(s\\) of widths"):
        qnn_sklearn.load(tmp_path / "model.qnn")


@pytest.mark.parametrize("blocks", [0, 65, 2.0, True, "3", None], ids=repr)
def test_a_saved_block_mean_is_checked(blocks):
    with pytest.raises(ValueError, match="BlockMean"):
        stage_from_json({"kind": "block_mean", "blocks": blocks})


def test_block_mean_round_trips_and_averages_equal_blocks():
    stage = stage_from_json(BlockMean(3).to_json())
    x = np.arange(12.0).reshape(2, 6)
    np.testing.assert_array_equal(stage(x), (x[:, 0:2] + x[:, 2:4] + x[:, 4:6]) / 3)
    with pytest.raises(ValueError, match="do not split"):
        BlockMean(4)(x)
    assert softmax(stage(x)).shape == (2, 2)
