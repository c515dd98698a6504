"""FHEModelSearchCV: a hyper-parameter search that weighs accuracy against FHE latency."""

from __future__ import annotations

import logging
import numbers
import warnings
from functools import partial

import numpy as np
from sklearn.base import is_classifier
from sklearn.metrics import check_scoring
from sklearn.model_selection import ParameterGrid, ParameterSampler
from sklearn.model_selection._search import BaseSearchCV
from sklearn.utils._param_validation import Interval
from sklearn.utils.validation import check_is_fitted

from ..quantization.machine_costs import MachineCosts
from ..quantization.pbs_timing import cached_machine_costs
from .latency_model import predicted_latency_s
from .plot import plot_front
from .scoring import LATENCY, LatencyScoring, fhe_model, latency_columns
from .selection import pareto_front, select_candidate

_LOG = logging.getLogger(__name__)
"""Where the first search on a machine says that it measures the machine's costs (minutes):
a library leaves printing to its caller (``logging.basicConfig(level=logging.INFO)``)."""


class FHEModelSearchCV(BaseSearchCV):
    """Cross-validated search over a qnn_sklearn estimator's settings, priced in FHE latency.

    Each candidate (a grid point, or one of ``n_iter`` random draws) is cross-validated like
    in ``GridSearchCV``; every fold's fitted model is also priced: the bootstraps of the
    program its circuit runs, at this machine's measured cost per bootstrap, plus the fixed
    cost of a runtime call (``search/latency_model.py``). The refit model is the most
    accurate within ``max_latency_s``, or the cheapest reaching ``min_score``.

    Parameters
    ----------
    estimator : NeuralNetClassifier, NeuralNetRegressor, or a Pipeline ending in one
        The model to search (unfitted; it is cloned). In a Pipeline, name the model's
        settings with its step's prefix (``neuralnetclassifier__module__n_layers``).
    param_distributions : dict or list of dicts
        Its settings to search, e.g. ``{"module__n_layers": [1, 2, 3], "module__n_w_bits":
        [2, 3, 4], "rounding_threshold_bits": ["auto", None]}``. Lists only, without
        ``n_iter``: every combination (``ParameterGrid``); with ``n_iter``, scipy
        distributions may also appear (``ParameterSampler``).
    n_iter : int or None
        Random candidates to draw; None searches the whole grid.
    scoring, cv, n_jobs, verbose, pre_dispatch, error_score, return_train_score
        As in ``GridSearchCV`` (``n_jobs`` runs folds in joblib workers, including under
        ``joblib.parallel_backend("dask")``). Workers must be processes, or Dask workers of
        one thread each: every fit exports its network with Brevitas, whose export state is
        global to a process, so two fits in threads of one process collide.
    max_latency_s : float or None
        Budget in seconds per row of FHE execution.
    min_score : float or None
        Score floor; not together with ``max_latency_s``.
    refit : bool or callable
        Refit the chosen candidate on all the data and compile it on ``X`` (True); a callable
        picks the index itself from ``cv_results_`` (then give no budget), as in sklearn.
    machine_costs : MachineCosts or None
        The bootstrap costs to price with; None reads this machine's cached table, measuring
        it first if there is none (a few minutes, once per machine).
    random_state : int, RandomState or None
        Seeds the random draws of ``n_iter``.

    Attributes
    ----------
    cv_results_ : dict
        GridSearchCV's columns, with ``predicted_latency_s`` and ``pbs_count`` (means over the
        folds; ``std_*`` and ``split{i}_*`` beside them).
    best_estimator_, best_index_, best_params_, best_score_ :
        The chosen candidate (``best_estimator_`` refit, and its FHE model compiled on ``X``
        or, in a Pipeline, on ``X`` as the steps before it transform it).
    best_predicted_latency_s_ : float
        The refit model's latency, predicted from its compiled circuit.
    pareto_front_ : ndarray of int
        Indices into ``cv_results_`` of the candidates no other beats on both score and
        latency, by increasing latency.
    machine_costs_ : MachineCosts
        The table the candidates were priced with.
    """

    _parameter_constraints: dict = {
        **BaseSearchCV._parameter_constraints,
        "param_distributions": [dict, list],
        "n_iter": [Interval(numbers.Integral, 1, None, closed="left"), None],
        "max_latency_s": [Interval(numbers.Real, 0, None, closed="neither"), None],
        "min_score": [numbers.Real, None],
        "machine_costs": [MachineCosts, None],
        "random_state": ["random_state"],
    }

    def __init__(
        self,
        estimator,
        param_distributions,
        *,
        n_iter=None,
        scoring=None,
        cv=5,
        max_latency_s=None,
        min_score=None,
        machine_costs=None,
        n_jobs=None,
        refit=True,
        random_state=None,
        verbose=0,
        pre_dispatch="2*n_jobs",
        error_score=np.nan,
        return_train_score=False,
    ):
        super().__init__(
            estimator=estimator,
            scoring=scoring,
            n_jobs=n_jobs,
            refit=refit,
            cv=cv,
            verbose=verbose,
            pre_dispatch=pre_dispatch,
            error_score=error_score,
            return_train_score=return_train_score,
        )
        self.param_distributions = param_distributions
        self.n_iter = n_iter
        self.max_latency_s = max_latency_s
        self.min_score = min_score
        self.machine_costs = machine_costs
        self.random_state = random_state

    def _run_search(self, evaluate_candidates):
        """Every grid point, or ``n_iter`` draws."""
        if self.n_iter is None:
            evaluate_candidates(ParameterGrid(self.param_distributions))
        else:
            evaluate_candidates(
                ParameterSampler(
                    self.param_distributions, self.n_iter, random_state=self.random_state
                )
            )

    def _check_settings(self) -> None:
        """The checks that need no data, before any training (ValueError naming the fix)."""
        self._validate_params()
        if fhe_model(self.estimator) is None:
            raise ValueError(
                "FHEModelSearchCV prices qnn_sklearn models: estimator must be a "
                "qnn_sklearn.NeuralNetClassifier or NeuralNetRegressor, or a Pipeline ending "
                f"in one; got {type(self.estimator).__name__}. Use sklearn's GridSearchCV "
                "for others."
            )
        if self.max_latency_s is not None and self.min_score is not None:
            raise ValueError(
                "Give max_latency_s (the most accurate model within it) or min_score (the "
                "cheapest model reaching it), not both."
            )
        if self.min_score is not None and not np.isfinite(self.min_score):
            raise ValueError(f"min_score must be a finite number, got {self.min_score!r}.")
        if isinstance(self.refit, str):
            raise ValueError(
                "refit is True, False or a callable here: the metric to choose by is the "
                f"score, within the latency budget. Got refit={self.refit!r}."
            )
        budget = self.max_latency_s is not None or self.min_score is not None
        if callable(self.refit) and budget:
            raise ValueError(
                "A callable refit chooses the candidate itself: drop max_latency_s / min_score, "
                "or pass refit=True to choose by them."
            )
        if not (self.scoring is None or isinstance(self.scoring, str) or callable(self.scoring)):
            raise ValueError(
                "scoring must be one metric (None, a name or a scorer): the second one is the "
                f"predicted latency. Got {type(self.scoring).__name__}."
            )

    def fit(self, X, y=None, **params):
        """Cross-validate and price every candidate, choose one, refit and compile it."""
        self._check_settings()
        costs = self.machine_costs
        if costs is None:
            costs = cached_machine_costs(progress=_LOG.info)
        select = partial(
            _select_from_results, max_latency_s=self.max_latency_s, min_score=self.min_score
        )
        score = check_scoring(self.estimator, self.scoring)
        search = _PricedSearch(
            self.estimator,
            self._run_search,
            scoring=LatencyScoring(score, costs),
            refit=(self.refit if callable(self.refit) else select) if self.refit else False,
            cv=self.cv,
            n_jobs=self.n_jobs,
            verbose=self.verbose,
            pre_dispatch=self.pre_dispatch,
            error_score=self.error_score,
            return_train_score=self.return_train_score,
        ).fit(X, y, **params)

        results = search.cv_results_
        self.best_index_ = search.best_index_ if self.refit else select(results)
        self.best_params_ = results["params"][self.best_index_]
        self.best_score_ = results["mean_test_score"][self.best_index_]
        self.cv_results_ = latency_columns(results)
        self.pareto_front_ = pareto_front(
            self.cv_results_["mean_test_score"], self.cv_results_["predicted_latency_s"]
        )
        self.n_splits_, self.scorer_, self.multimetric_ = search.n_splits_, score, False
        self.machine_costs_ = costs
        if self.refit:
            self._adopt_refit(search, X, costs)
        return self

    def _adopt_refit(self, search, X, costs: MachineCosts) -> None:
        """The refit model, compiled on ``X``, and its latency from that circuit; a warning if
        it exceeds the budget (its training on all rows may keep more neurons or bits than
        the folds' did)."""
        self.best_estimator_, self.refit_time_ = search.best_estimator_, search.refit_time_
        if hasattr(search, "feature_names_in_"):
            self.feature_names_in_ = search.feature_names_in_
        model = fhe_model(self.best_estimator_)
        if model is not self.best_estimator_:  # a Pipeline: its model sees the transformed X
            X = self.best_estimator_[:-1].transform(X)
        model.compile(X)
        self.best_predicted_latency_s_ = predicted_latency_s(model.quantized_module_, costs)
        if self.max_latency_s is not None and self.best_predicted_latency_s_ > self.max_latency_s:
            warnings.warn(
                f"The refit model's predicted latency, {self.best_predicted_latency_s_:.4g} s "
                f"per row, exceeds max_latency_s={self.max_latency_s:g} (its folds averaged "
                f"{self.cv_results_['predicted_latency_s'][self.best_index_]:.4g} s).",
                UserWarning,
                stacklevel=3,
            )

    def plot_front(self, ax=None, reference=None):
        """Score against predicted latency: every candidate, the front, the chosen one.

        ``reference``: ``{"latency_s": ..., "score": ..., "label": ...}``, another model to
        mark (e.g. Concrete ML's default on the task). Returns the matplotlib Axes.
        """
        check_is_fitted(self, "cv_results_")
        return plot_front(
            self.cv_results_["mean_test_score"],
            self.cv_results_["predicted_latency_s"],
            self.pareto_front_,
            self.best_index_,
            ax=ax,
            reference=reference,
            score_label=self._score_name(),
        )

    def _score_name(self) -> str:
        """What the score axis measures: the scoring's name, else the estimator's own score."""
        if isinstance(self.scoring, str):
            return self.scoring
        if self.scoring is None:
            return "accuracy" if is_classifier(self.estimator) else "R²"
        return "score"


def _select_from_results(results, max_latency_s=None, min_score=None) -> int:
    return select_candidate(
        results["mean_test_score"], results[f"mean_test_{LATENCY}"], max_latency_s, min_score
    )


class _PricedSearch(BaseSearchCV):
    """sklearn's search machinery (folds, workers, refit) run on FHEModelSearchCV's candidates
    with its two-number scoring. FHEModelSearchCV is the public estimator; this inner search
    lets sklearn treat the scoring as the multi-metric, callable-refit case it supports."""

    def __init__(self, estimator, run_search, **search_params):
        super().__init__(estimator, **search_params)
        self.run_search = run_search

    def _run_search(self, evaluate_candidates):
        self.run_search(evaluate_candidates)
