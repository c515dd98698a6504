"""Deployment depends on the integer model only: neither side imports the training stack.

torch itself is still imported: concrete-python imports it (``concrete.fhe.extensions``).
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

import qnn_sklearn.deployment

TRAINING_STACK = ("brevitas", "skorch", "qnn_sklearn.sklearn", "qnn_sklearn.torch")


def _modules_after(statement: str) -> set[str]:
    code = f"import sys\n{statement}\nprint(' '.join(sys.modules))"
    result = subprocess.run(
        [sys.executable, "-W", "ignore", "-c", code], capture_output=True, text=True, check=True
    )
    return set(result.stdout.split())


def test_top_level_package_imports_nothing_heavy():
    loaded = _modules_after("import qnn_sklearn")
    assert not loaded & {"torch", "concrete", *TRAINING_STACK}


@pytest.mark.parametrize(
    "statement",
    [
        "from qnn_sklearn.deployment import FHEBatchRunner, FHEModelServer",
        "from qnn_sklearn.deployment import FHEHTTPClient, FHEModelClient",
        "import qnn_sklearn.deployment.http_server",
    ],
)
def test_client_and_server_sides_skip_the_training_stack(statement):
    loaded = _modules_after(statement)
    assert not loaded & set(TRAINING_STACK)


def test_no_deployment_module_imports_the_training_side():
    """Not even lazily, inside a function: deployment's imports are read from the source."""
    package = Path(qnn_sklearn.deployment.__file__).parent
    for path in package.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom):
                names = [("." * node.level) + (node.module or "")]
            elif isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            else:
                continue
            for name in names:
                top = name.split(".")[0] if not name.startswith(".") else name
                assert top not in ("brevitas", "skorch", "torch"), (path.name, name)
                assert not name.startswith(("..sklearn", "..torch", "..onnx")), (path.name, name)
                assert not name.startswith(("qnn_sklearn.sklearn", "qnn_sklearn.torch")), name


def test_public_names_load_on_first_use():
    loaded = _modules_after(
        "import qnn_sklearn\nassert qnn_sklearn.load.__module__.endswith('persistence')\n"
        "assert 'NeuralNetClassifier' in dir(qnn_sklearn)"
    )
    assert "skorch" in loaded
