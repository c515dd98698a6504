"""The server side of deployment does not import the training stack (brevitas, skorch).

torch itself is still imported: concrete-python imports it (``concrete.fhe.extensions``).
"""

from __future__ import annotations

import subprocess
import sys

TRAINING_STACK = ("brevitas", "skorch", "qnn_sklearn.sklearn")


def _modules_after(statement: str) -> set[str]:
    code = f"import sys\n{statement}\nprint(' '.join(sys.modules))"
    result = subprocess.run(
        [sys.executable, "-W", "ignore", "-c", code], capture_output=True, text=True, check=True
    )
    return set(result.stdout.split())


def test_top_level_package_imports_nothing_heavy():
    loaded = _modules_after("import qnn_sklearn")
    assert not loaded & {"torch", "concrete", *TRAINING_STACK}


def test_server_side_skips_the_training_stack():
    loaded = _modules_after("from qnn_sklearn.deployment import FHEBatchRunner, FHEModelServer")
    assert not loaded & set(TRAINING_STACK)


def test_public_names_load_on_first_use():
    loaded = _modules_after(
        "import qnn_sklearn\nassert qnn_sklearn.load.__module__.endswith('persistence')\n"
        "assert 'NeuralNetClassifier' in dir(qnn_sklearn)"
    )
    assert "skorch" in loaded
