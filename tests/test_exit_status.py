"""The process keeps the exit status its owner chose, after circuits were compiled and run.

concrete-python's ``atexit`` hook used to end every such process with status 0
(``qnn_sklearn/fhe_runtime.py`` says why), so a failing pytest run or CI job reported success.
Both tests run a fresh interpreter: the hook only fires when a process ends.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

FIT_COMPILE_RUN = """
import numpy as np
from sklearn.datasets import load_iris
from qnn_sklearn import NeuralNetClassifier

X, y = load_iris(return_X_y=True)
X = ((X - X.mean(0)) / X.std(0)).astype(np.float32)
model = NeuralNetClassifier(module__n_layers=2, max_epochs=2, random_state=0, verbose=0)
model.fit(X, y).compile(X)
"""


def _run_python(code: str, cwd) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", code], cwd=cwd, capture_output=True, text=True, timeout=600
    )


@pytest.mark.parametrize("mode", ["simulate", "execute"])
def test_script_keeps_its_exit_status_after_fhe(mode, tmp_path):
    code = FIT_COMPILE_RUN + f"model.predict(X[:1], fhe={mode!r})\nimport sys\nsys.exit(3)\n"
    result = _run_python(code, tmp_path)
    assert result.returncode == 3, result.stderr[-2000:]


def test_pytest_fails_when_a_test_fails_after_a_circuit_ran(tmp_path):
    test_file = tmp_path / "test_fails_after_fhe.py"
    test_file.write_text(
        "def test_fails_after_fhe():\n"
        + textwrap.indent(FIT_COMPILE_RUN + "model.predict(X[:1], fhe='execute')\n", "    ")
        + "    assert False, 'this failure must reach the exit status'\n"
    )
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(test_file)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert "1 failed" in result.stdout, result.stdout[-2000:]
    assert result.returncode == 1, result.stdout[-2000:]
