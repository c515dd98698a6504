"""Choose weight bits and width with scikit-learn's GridSearchCV, then run the best in FHE.

The estimators are ordinary scikit-learn estimators: ``clone``, ``get_params``/``set_params``
and a ``Pipeline`` work, so ``GridSearchCV`` can tune ``module__n_w_bits`` and
``module__n_hidden_neurons_multiplier`` like any hyper-parameter.

Usage: ``python examples/grid_search.py [--epochs 20]``
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import pandas as pd
from sklearn.datasets import load_breast_cancer
from sklearn.model_selection import GridSearchCV, train_test_split
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from qnn_sklearn import NeuralNetClassifier


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=20)
    args = parser.parse_args()

    X, y = load_breast_cancer(return_X_y=True)
    X_train, X_test, y_train, y_test = train_test_split(X, y, test_size=0.25, random_state=0)

    # float64 features are fine: the estimator casts them to float32 itself. The settings not
    # named keep their defaults: 3-bit activations, 8-bit accumulators, Adam at lr 1e-3 on
    # batches of 64.
    classifier = NeuralNetClassifier(
        module__n_layers=3, max_epochs=args.epochs, random_state=0, rounding_threshold_bits=6
    )
    pipeline = make_pipeline(StandardScaler(), classifier)
    grid = {
        "neuralnetclassifier__module__n_w_bits": [2, 3, 4],
        "neuralnetclassifier__module__n_hidden_neurons_multiplier": [1, 4],
    }
    search = GridSearchCV(pipeline, grid, cv=3, n_jobs=1)
    start = time.perf_counter()
    search.fit(X_train, y_train)
    print(
        f"grid search ({len(search.cv_results_['params'])} settings × 3 folds) in "
        f"{time.perf_counter() - start:.0f}s"
    )
    results = pd.DataFrame(search.cv_results_)[
        [
            "param_neuralnetclassifier__module__n_w_bits",
            "param_neuralnetclassifier__module__n_hidden_neurons_multiplier",
            "mean_test_score",
            "std_test_score",
        ]
    ]
    results.columns = ["n_w_bits", "multiplier", "cv accuracy", "std"]
    print(results.sort_values("cv accuracy", ascending=False).to_string(index=False))
    print(f"best: {search.best_params_}, test accuracy {search.score(X_test, y_test):.3f}")

    # The best pipeline's last step is a fitted NeuralNetClassifier: compile it on the
    # transformed training set and check the FHE simulation against the clear model.
    best = search.best_estimator_
    preprocess, model = best[:-1], best[-1]
    X_train_t, X_test_t = preprocess.transform(X_train), preprocess.transform(X_test)
    start = time.perf_counter()
    circuit = model.compile(X_train_t)
    seconds = time.perf_counter() - start
    print(f"compiled in {seconds:.1f}s: {circuit.programmable_bootstrap_count} PBS")
    for layer in model.fhe_report()["layers"]:
        if layer["pbs_count"]:
            print(
                f"  {layer['layer']}: {layer['neurons']} neurons, certified accumulator "
                f"{layer['certified_bits']} bits, lookups at {layer['pbs_precision']} bits "
                f"after removing {layer['lsbs_to_remove']} low bits"
            )
    simulated = model.predict(X_test_t, fhe="simulate")
    clear = model.predict(X_test_t)
    print(
        f"FHE simulation: accuracy {np.mean(simulated == y_test):.3f}, "
        f"equal to clear on {np.mean(simulated == clear):.1%} of {len(clear)} rows"
    )


if __name__ == "__main__":
    main()
