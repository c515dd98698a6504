"""Scoring a fitted candidate twice: the user's metric, and its price in FHE latency.

sklearn's search calls the scoring on every fold's fitted model, in the worker that fitted it;
that is the one place the model is seen, so the latency and bootstrap count are read there
too, as two more metrics. The scoring carries the cost table, so a worker (a joblib process or
a Dask task) prices with the table the search was given, and measures nothing itself.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from sklearn.pipeline import Pipeline

from ..quantization.machine_costs import MachineCosts
from ..sklearn.fhe_estimator import FHEEstimatorMixin
from .latency_model import pbs_count, predicted_latency_s

LATENCY = "predicted_latency_s"
PBS_COUNT = "pbs_count"


def fhe_model(estimator):
    """The qnn_sklearn model that runs in FHE: ``estimator`` itself, or a Pipeline's last step
    (the steps before it run in the clear, on the client); None for anything else."""
    if isinstance(estimator, Pipeline):
        estimator = estimator.steps[-1][1]
    return estimator if isinstance(estimator, FHEEstimatorMixin) else None


@dataclass(frozen=True)
class LatencyScoring:
    """A multi-metric scoring: ``score`` (the user's scorer), the predicted latency of one row
    in seconds, and the bootstraps per row."""

    score: Callable
    costs: MachineCosts

    def __call__(self, estimator, X, y=None, **score_params) -> dict:
        module = fhe_model(estimator).quantized_module_
        return {
            "score": self.score(estimator, X, y, **score_params),
            LATENCY: predicted_latency_s(module, self.costs),
            PBS_COUNT: float(pbs_count(module)),
        }


def latency_columns(results: dict) -> dict:
    """``cv_results_`` with the two prices named for what they are, not as test scores:
    ``predicted_latency_s`` / ``pbs_count`` (fold means), ``std_*`` and ``split{i}_*``. Their
    ranks (sklearn ranks every metric as higher-is-better) and training-side copies (the same
    model, so the same price) are dropped."""
    results = dict(results)
    for name in (LATENCY, PBS_COUNT):
        for key in [key for key in results if key.endswith(f"train_{name}")]:
            del results[key]
        del results[f"rank_test_{name}"]
        results[name] = results.pop(f"mean_test_{name}")
        results[f"std_{name}"] = results.pop(f"std_test_{name}")
        for key in [key for key in results if key.endswith(f"_test_{name}")]:
            results[key.replace("_test_", "_")] = results.pop(key)
    return results
