"""Session fixtures of the deployment tests: small compiled models, saved once, keys made once.

The models are tiny (3 inputs, 6 hidden neurons, 2-bit PTQ) so that real key generation costs
about a second; every fixture is session-scoped and must not be mutated by tests.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from qnn_sklearn.deployment import FHEModelClient, FHEModelDev, ServedModel
from qnn_sklearn.torch import compile_torch_model

REPO_ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="session")
def tiny(fhe_execution_mlp):
    """(compiled QuantizedModule, its inputset): tests/conftest.py's tiny 2-bit MLP, compiled
    without compression on purpose (FHEModelDev must add it)."""
    return fhe_execution_mlp.module, fhe_execution_mlp.inputset


@pytest.fixture(scope="session")
def X_test():
    return np.random.default_rng(11).normal(size=(6, 3))


@pytest.fixture(scope="session")
def model_dir(tiny, tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("deploy") / "model"
    FHEModelDev(path, tiny[0]).save()
    return path


@pytest.fixture(scope="session")
def key_dir(tmp_path_factory) -> Path:
    """Private keys, outside every model directory; the files are named after the circuit, so
    the same circuit saved several times (module, classifier, regressor) shares them."""
    return tmp_path_factory.mktemp("private_keys")


@pytest.fixture(scope="session")
def fhe_client(model_dir, key_dir) -> FHEModelClient:
    client = FHEModelClient(model_dir, key_dir=key_dir)
    client.generate_private_and_evaluation_keys()
    return client


@pytest.fixture(scope="session")
def evaluation_keys(fhe_client) -> bytes:
    return fhe_client.get_serialized_evaluation_keys()


@pytest.fixture(scope="session")
def classifier(tiny) -> ServedModel:
    """The tiny module served as a classifier of string labels."""
    return ServedModel(tiny[0], "classifier", np.array(["cat", "dog"]))


@pytest.fixture(scope="session")
def classifier_dir(classifier, tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("deploy_classifier") / "model"
    FHEModelDev(path, classifier).save()
    return path


@pytest.fixture(scope="session")
def other_model(mlp, make_inputset, tmp_path_factory):
    """Another circuit (4 inputs, other crypto parameters): neither its keys nor its
    ciphertexts fit ``model_dir``.

    Returns (model dir, its client with keys, its serialized evaluation keys).
    """
    torch.manual_seed(7)
    model = mlp(torch.nn.Linear(4, 6), torch.nn.ReLU(), torch.nn.Linear(6, 2))
    inputset = make_inputset(100, n_features=4, seed=7)
    module = compile_torch_model(model, inputset, n_bits=2, p_error=2**-3)
    path = tmp_path_factory.mktemp("deploy_other") / "model"
    FHEModelDev(path, module).save()
    client = FHEModelClient(path)
    client.generate_private_and_evaluation_keys()
    return path, client, client.get_serialized_evaluation_keys()


@pytest.fixture(scope="session")
def subprocess_env() -> dict:
    """Environment of child processes: this checkout importable, quiet warnings."""
    path = os.pathsep.join([str(REPO_ROOT), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    return {**os.environ, "PYTHONPATH": path, "PYTHONWARNINGS": "ignore"}


@pytest.fixture(scope="session")
def python() -> str:
    return sys.executable
