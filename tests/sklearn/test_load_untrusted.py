"""qnn_sklearn.load on crafted files: nothing the file names is imported or called unless it is
on the allow-list, and nothing it declares is allocated beyond the limits."""

from __future__ import annotations

import copy
import importlib
import io
import json
import pathlib
import sys
import tracemalloc
import zipfile

import numpy as np
import pytest
import torch

import qnn_sklearn
from qnn_sklearn import NeuralNetClassifier, safe_zip
from qnn_sklearn.sklearn.saving import MANIFEST

TINY = {"module__n_layers": 2, "module__n_hidden_neurons_multiplier": 2, "max_epochs": 2}


@pytest.fixture(scope="module")
def X():
    return np.random.default_rng(0).normal(size=(40, 3)).astype(np.float32)


@pytest.fixture(scope="module")
def classifier(X):
    return NeuralNetClassifier(random_state=0, lr=0.02, **TINY).fit(X, X[:, 0] > 0)


@pytest.fixture(scope="module")
def dumped(classifier) -> bytes:
    buffer = io.BytesIO()
    classifier.dump(buffer)
    return buffer.getvalue()


def _imported(path: str) -> dict:
    return {"kind": "import", "value": path}


def _rewrite(source: bytes, change_manifest=None, members: dict | None = None) -> io.BytesIO:
    """A copy of a dumped file: the manifest through ``change_manifest``, members replaced."""
    members = members or {}
    out = io.BytesIO()
    with zipfile.ZipFile(io.BytesIO(source)) as old:
        with zipfile.ZipFile(out, "w", compression=zipfile.ZIP_DEFLATED) as new:
            for name in old.namelist():
                content = members.pop(name, old.read(name))
                if name == MANIFEST and change_manifest is not None:
                    manifest = json.loads(content)
                    change_manifest(manifest)
                    content = json.dumps(manifest)
                new.writestr(name, content)
            for name, content in members.items():
                new.writestr(name, content)
    out.seek(0)
    return out


def _member_of(source: bytes, tensor: str) -> str:
    with zipfile.ZipFile(io.BytesIO(source)) as archive:
        return json.loads(archive.read(MANIFEST))["network"]["state"][tensor]


@pytest.fixture
def marker(tmp_path):
    """A file that the injected code would create."""
    return tmp_path / "marker"


@pytest.fixture
def planted_module(tmp_path, marker, monkeypatch, request):
    """A module on sys.path whose import writes ``marker``: importing it is the side effect."""
    name = "qnn_sklearn_planted_module"
    (tmp_path / f"{name}.py").write_text(
        f"open({str(marker)!r}, 'w').close()\n\nclass Anything:\n    pass\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    request.addfinalizer(lambda: sys.modules.pop(name, None))
    return name


# -- code execution through import paths -------------------------------------------------------


def test_os_popen_criterion_is_refused_without_running(dumped, marker):
    def attack(manifest):
        manifest["params"].update(criterion=_imported("os:popen"), criterion__cmd=f"touch {marker}")

    with pytest.raises(ValueError, match="parameter 'criterion': 'os:popen' is not on the allow"):
        qnn_sklearn.load(_rewrite(dumped, attack))
    assert not marker.exists()


def test_subprocess_popen_criterion_is_refused_without_running(dumped, marker):
    def attack(manifest):
        command = {"kind": "list", "value": ["touch", str(marker)]}
        manifest["params"].update(criterion=_imported("subprocess:Popen"), criterion__args=command)

    with pytest.raises(ValueError, match="'subprocess:Popen' is not on the allow-list"):
        qnn_sklearn.load(_rewrite(dumped, attack))
    assert not marker.exists()


def _callbacks_holding(path):
    return {"kind": "list", "value": [{"kind": "tuple", "value": ["planted", _imported(path)]}]}


PLACES = {
    "estimator": lambda m, path: m.update(estimator=path),
    "criterion": lambda m, path: m["params"].update(criterion=_imported(path)),
    "optimizer": lambda m, path: m["params"].update(optimizer=_imported(path)),
    "module": lambda m, path: m["params"].update(module=_imported(path)),
    "callbacks": lambda m, path: m["params"].update(callbacks=_callbacks_holding(path)),
    "iterator_train": lambda m, path: m["params"].update(iterator_train=_imported(path)),
    "dataset": lambda m, path: m["params"].update(dataset=_imported(path)),
    "train_split": lambda m, path: m["params"].update(train_split=_imported(path)),
    "predict_nonlinearity": lambda m, path: m["params"].update(
        predict_nonlinearity=_imported(path)
    ),
    "module__activation_function": lambda m, path: m["params"].update(
        module__activation_function=_imported(path)
    ),
    "a nested callback argument": lambda m, path: m["params"].update(
        callbacks__print_log__sink=_imported(path)
    ),
    "network.init_kwargs": lambda m, path: m["network"]["init_kwargs"]["value"].update(
        activation_function=_imported(path)
    ),
}


@pytest.mark.parametrize("place", sorted(PLACES))
def test_a_module_off_the_list_is_never_imported(dumped, planted_module, marker, place):
    path = f"{planted_module}:Anything"
    with pytest.raises(ValueError, match=f"'{path}' is not on the allow-list"):
        qnn_sklearn.load(_rewrite(dumped, lambda m: PLACES[place](m, path)))
    assert planted_module not in sys.modules
    assert not marker.exists()


def test_the_planted_module_would_have_left_its_marker(planted_module, marker):
    """The check above can fail: importing the planted module does write the marker."""
    importlib.import_module(planted_module)
    assert marker.exists()


@pytest.mark.parametrize(
    ("name", "path"),
    [
        ("train_split", "torch.nn.modules.loss:CrossEntropyLoss"),
        ("criterion", "torch.optim.adam:Adam"),
        ("optimizer", "skorch.callbacks.logging:PrintLog"),
        ("iterator_train", "torch.nn.modules.activation:ReLU"),
    ],
)
def test_a_listed_class_is_refused_outside_its_parameter(dumped, name, path):
    with pytest.raises(ValueError, match=f"parameter '{name}': '{path}' is not on the allow"):
        qnn_sklearn.load(_rewrite(dumped, lambda m: m["params"].update({name: _imported(path)})))


def test_a_callback_that_writes_files_is_refused(dumped, tmp_path):
    """skorch's Checkpoint creates its ``dirname`` when initialized, and writes there later."""
    target = tmp_path / "written_by_checkpoint"

    def attack(manifest):
        manifest["params"].update(
            callbacks=_callbacks_holding("skorch.callbacks.training:Checkpoint"),
            callbacks__planted__dirname=str(target),
        )

    with pytest.raises(ValueError, match="'skorch.callbacks.training:Checkpoint' is not on"):
        qnn_sklearn.load(_rewrite(dumped, attack))
    assert not target.exists()


def test_a_listed_callback_loads(dumped, X, classifier):
    def add_early_stopping(manifest):
        manifest["params"].update(
            callbacks=_callbacks_holding("skorch.callbacks.training:EarlyStopping"),
            callbacks__planted__patience=3,
        )

    loaded = qnn_sklearn.load(_rewrite(dumped, add_early_stopping))
    assert dict(loaded.callbacks_)["planted"].patience == 3
    assert np.array_equal(loaded.predict_proba(X), classifier.predict_proba(X))


def test_trusted_extends_the_allow_list(classifier, X, tmp_path, monkeypatch, request):
    name = "qnn_sklearn_custom_losses"
    (tmp_path / f"{name}.py").write_text(
        "import torch\n\n\nclass SmoothedCrossEntropy(torch.nn.CrossEntropyLoss):\n"
        "    def __init__(self, **kwargs):\n"
        "        super().__init__(label_smoothing=0.1, **kwargs)\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    request.addfinalizer(lambda: sys.modules.pop(name, None))
    loss_class = importlib.import_module(name).SmoothedCrossEntropy
    model = copy.deepcopy(classifier)
    model.criterion = loss_class  # as set_params would, without re-initializing skorch
    buffer = io.BytesIO()
    model.dump(buffer)
    source = buffer.getvalue()
    with pytest.raises(ValueError, match=f"'{name}:SmoothedCrossEntropy' is not on the allow"):
        qnn_sklearn.load(io.BytesIO(source))
    for trusted in ([loss_class], [f"{name}:SmoothedCrossEntropy"]):
        loaded = qnn_sklearn.load(io.BytesIO(source), trusted=trusted)
        assert loaded.criterion is loss_class
        assert isinstance(loaded.criterion_, loss_class)
        assert np.array_equal(loaded.predict_proba(X), classifier.predict_proba(X))


def test_a_trusted_class_names_the_estimator_only_if_it_is_one(dumped):
    """A trusted class may stand in any parameter, but the estimator must derive from one of
    the package's estimators (the loss class here would otherwise be called with them)."""
    path = "torch.nn.modules.loss:CrossEntropyLoss"
    source = _rewrite(dumped, lambda m: m.update(estimator=path))
    with pytest.raises(ValueError, match=f"'{path}' is not a qnn_sklearn estimator class"):
        qnn_sklearn.load(source, trusted=[torch.nn.CrossEntropyLoss])


@pytest.mark.parametrize(
    ("trusted", "message"),
    [([42], "trusted entries are classes"), (["no_colon"], "not an import path")],
)
def test_invalid_trusted_entries_are_refused(dumped, trusted, message):
    with pytest.raises(ValueError, match=message):
        qnn_sklearn.load(io.BytesIO(dumped), trusted=trusted)


# -- sizes the file declares --------------------------------------------------------------------


DEEPLY_NESTED = {"kind": "list", "value": []}
for _ in range(40):
    DEEPLY_NESTED = {"kind": "list", "value": [DEEPLY_NESTED]}


def _init_kwargs(**changes):
    return lambda m: m["network"]["init_kwargs"]["value"].update(changes)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (_init_kwargs(n_hidden_neurons_multiplier=10**7), "n_hidden_neurons_multiplier"),
        (_init_kwargs(n_layers=10**6), r"init_kwargs: n_layers must be an integer in \[1, 64\]"),
        (_init_kwargs(input_dim=10**9), "init_kwargs: input_dim must be an integer"),
        (_init_kwargs(n_w_bits=10**12), "init_kwargs: n_w_bits must be an integer"),
        (_init_kwargs(input_dim=60_000, n_hidden_neurons_multiplier=1), "weights, over the limit"),
        (lambda m: m["network"].update(hidden_widths=[10**9]), r"hidden_widths\[0\]"),
        (lambda m: m["network"].update(hidden_widths=[6, 6]), "hidden_widths must be a list of 1"),
        (
            lambda m: m["params"].update(module__n_hidden_neurons_multiplier=30_000),
            r"module__ parameters and fitted sizes: input_dim \* n_hidden_neurons_multiplier = 9",
        ),
        (lambda m: m["fitted"].update(n_features_in_=10**9), "fitted.n_features_in_"),
        (
            lambda m: m["fitted"]["classes"].update(dtype="<U999999999"),
            "fitted.classes.dtype: 2 values of <U999999999",
        ),
        (
            lambda m: m["params"].update(
                lr={"kind": "list", "value": [json.loads("[" * 50 + "]" * 50)]}
            ),
            "bare JSON list",
        ),
    ],
)
def test_declared_sizes_are_bounded(dumped, change, message):
    with pytest.raises(ValueError, match=message):
        qnn_sklearn.load(_rewrite(dumped, change))


def _plan(plan):
    return lambda m: m["network"].update(rounding_plan=plan)


def _compile_options(options):
    return lambda m: m.update(compile_options=options)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (_plan([0]), r"rounding_plan must be null or \{\"lsbs\": a list of 1 integers\}"),
        (_plan({"lsbs": [0] * 10**6}), "a list of 1 integers"),
        (_plan({"lsbs": [0], "extra": 1}), "a list of 1 integers"),
        (_plan({"lsbs": ["3"]}), r"lsbs\[0\] must be an integer in \[0, 64\], got 3"),
        (_plan({"lsbs": [True]}), r"lsbs\[0\] must be an integer"),
        (_plan({"lsbs": [1.0]}), r"lsbs\[0\] must be an integer"),
        (_plan({"lsbs": [-1]}), r"lsbs\[0\] must be an integer"),
        (_plan({"lsbs": [10**400]}), r"lsbs\[0\] must be an integer in \[0, 64\], got 1000"),
        (_plan(None), r"the file says None, but its weights and settings make RoundingPlan"),
        (_compile_options("2**-10"), "compile_options must be an object with exactly the keys"),
        (
            _compile_options(
                {"p_error": None, "global_p_error": None, "configuration": _imported("os:system")}
            ),
            "compile_options must be an object with exactly the keys",
        ),
        (_compile_options({"p_error": 5, "global_p_error": None}), "p_error is a probability"),
        (
            _compile_options({"p_error": None, "global_p_error": "x" * 10**6}),
            "global_p_error is a probability",
        ),
    ],
)
def test_saved_plan_and_compile_options_are_checked(dumped, change, message):
    with pytest.raises(ValueError, match=message) as refused:
        qnn_sklearn.load(_rewrite(dumped, change))
    assert len(str(refused.value)) < 400


def _npy_header(shape, descr="<f4") -> bytes:
    buffer = io.BytesIO()
    header = {"descr": descr, "fortran_order": False, "shape": shape}
    np.lib.format.write_array_header_1_0(buffer, header)
    return buffer.getvalue()


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (_npy_header((2**31, 2**31)) + bytes(16), r"declares shape \(2147483648, 2147483648\)"),
        (_npy_header((6, 3)) + bytes(16), r"declares shape \(6, 3\) of float32 \(72 bytes\)"),
        (_npy_header((6, 3), descr="|O") + bytes(16), "has dtype object"),
        (b"\x93NUMPY\x09\x00junk", "is not a .npy array"),
    ],
)
def test_array_headers_are_checked_before_reading(dumped, content, message):
    member = _member_of(dumped, "linears.0.weight")
    tracemalloc.start()
    try:
        with pytest.raises(ValueError, match=r"network.state\['linears.0.weight'\].*" + message):
            qnn_sklearn.load(_rewrite(dumped, members={member: content}))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 32 * 2**20


def test_a_member_inflating_past_the_limit_is_refused(dumped, monkeypatch):
    monkeypatch.setattr(safe_zip, "MAX_MEMBER_BYTES", 16 * 2**20)
    member = _member_of(dumped, "linears.0.weight")
    bomb = _rewrite(dumped, members={member: bytes(64 * 2**20)})
    assert len(bomb.getvalue()) < 2**20
    with pytest.raises(ValueError, match=f"{member} declares more than 16777216 bytes inflated"):
        qnn_sklearn.load(bomb)


def test_a_member_larger_than_any_tensor_of_the_network_is_not_read(dumped):
    """Under the archive's limits, but more than a 3-6-2 network's tensors can take."""
    member = _member_of(dumped, "linears.0.weight")
    padded = _rewrite(dumped, members={member: bytes(2**20)})
    tracemalloc.start()
    try:
        with pytest.raises(ValueError, match=r"declares 1048576 bytes, more than the tensors"):
            qnn_sklearn.load(padded)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 2**20


def test_missing_members_are_named(dumped):
    member = _member_of(dumped, "linears.1.weight")
    with zipfile.ZipFile(io.BytesIO(dumped)) as archive:
        members = {name: archive.read(name) for name in archive.namelist()}
    for missing in (member, MANIFEST):
        out = io.BytesIO()
        with zipfile.ZipFile(out, "w") as crafted:
            for name, content in members.items():
                if name != missing:
                    crafted.writestr(name, content)
        out.seek(0)
        with pytest.raises(ValueError, match=rf"lacks \['{missing}'\]: it was not written by dump"):
            qnn_sklearn.load(out)


def test_an_oversized_manifest_is_refused_before_parsing(dumped, monkeypatch):
    monkeypatch.setattr(safe_zip, "MAX_JSON_BYTES", 2**20)
    padded = _rewrite(dumped, lambda m: m.update(padding=" " * 2**21))
    with pytest.raises(ValueError, match="manifest.json declares more than 1048576 .*MAX_JSON"):
        qnn_sklearn.load(padded)


class _WritesMarker:
    """Unpickling it would create ``path``: what a crafted checkpoint could run."""

    def __init__(self, path):
        self.path = str(path)

    def __reduce__(self):
        return (pathlib.Path.touch, (pathlib.Path(self.path),))


@pytest.mark.parametrize("name", ["f_params", "f_optimizer"])
def test_load_params_does_not_unpickle_a_crafted_file(classifier, tmp_path, marker, name):
    """skorch's load_params reads with torch.load; the estimators keep weights_only=True, so
    a params or optimizer file holding a pickled callable is refused, not run."""
    crafted = tmp_path / "crafted.pt"
    torch.save({"weight": _WritesMarker(marker)}, crafted)
    with pytest.raises(Exception, match="[Ww]eights only|weights_only"):
        copy.deepcopy(classifier).load_params(**{name: crafted})
    assert not marker.exists()
