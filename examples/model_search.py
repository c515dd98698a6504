"""Which depth, width and bits give acceptable accuracy at acceptable FHE latency?

FHEModelSearchCV cross-validates every candidate like GridSearchCV and also prices it: the
bootstraps of its compiled program at this machine's measured cost per bootstrap. It keeps the
most accurate candidate within ``max_latency_s`` and draws the accuracy/latency front, with
Concrete ML 1.9's default network on the same task marked for comparison.

The first run on a machine measures its bootstrap costs (a few minutes) and caches them.

Usage: ``python examples/model_search.py [--epochs 20] [--max-latency 2.0] [--n-jobs 2]``
"""

from __future__ import annotations

import argparse
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import numpy as np  # noqa: E402
from sklearn.datasets import load_breast_cancer  # noqa: E402
from sklearn.model_selection import train_test_split  # noqa: E402
from sklearn.pipeline import make_pipeline  # noqa: E402
from sklearn.preprocessing import StandardScaler  # noqa: E402

from qnn_sklearn import FHEModelSearchCV, NeuralNetClassifier  # noqa: E402

OUTPUT = Path(__file__).resolve().parent / "output" / "model_search_front.png"

CONCRETE_ML_DEFAULT = {
    "latency_s": 11.75,
    "score": 0.874,
    "label": "Concrete ML 1.9 default (test acc., load ~1)",
}
"""Concrete ML 1.9's default NeuralNetClassifier on breast_cancer, same split, this machine at
load 0.6-1.5 (benchmarks/results/ANCHOR.md at ac21bd7: test accuracy, measured FHE s/row).
Latencies scale with the load: compare with a search whose cost table was measured at a
similar one."""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--max-latency", type=float, default=10.0, help="seconds per row")
    parser.add_argument("--n-jobs", type=int, default=2)
    args = parser.parse_args()

    X, y = load_breast_cancer(return_X_y=True)
    # the anchor benchmark's split (stratified), on which the reference point was measured
    X_train, X_test, y_train, y_test = train_test_split(
        X, y, test_size=0.25, stratify=y, random_state=0
    )
    model = make_pipeline(
        StandardScaler(), NeuralNetClassifier(max_epochs=args.epochs, random_state=0)
    )
    settings = {
        "neuralnetclassifier__module__n_layers": [1, 2, 3],  # 1: linear, no bootstrap at all
        "neuralnetclassifier__module__n_hidden_neurons_multiplier": [1, 2],
        "neuralnetclassifier__module__n_w_bits": [2, 3],
        "neuralnetclassifier__module__n_a_bits": [2, 3],
    }
    search = FHEModelSearchCV(
        model,
        settings,
        n_iter=10,
        cv=3,
        max_latency_s=args.max_latency,
        n_jobs=args.n_jobs,
        random_state=0,
    )
    search.fit(X_train, y_train)

    results = search.cv_results_
    print(f"{'accuracy':>8} {'PBS':>6} {'s/row':>8}  settings")
    for i in np.argsort(results["predicted_latency_s"]):
        mark = "*" if i in search.pareto_front_ else " "
        settings_text = {k.rsplit("__", 1)[-1]: v for k, v in results["params"][i].items()}
        print(
            f"{results['mean_test_score'][i]:>8.3f} {results['pbs_count'][i]:>6.0f} "
            f"{results['predicted_latency_s'][i]:>8.3f} {mark} {settings_text}"
        )
    print(f"(* on the Pareto front) chosen within {args.max_latency} s/row: {search.best_params_}")
    print(f"cost table measured at load {search.machine_costs_.load_average:.1f}")

    best = search.best_estimator_  # refit on all training rows, its model compiled
    clear = best.predict(X_test)
    simulated = best[-1].predict(best[:-1].transform(X_test), fhe="simulate")
    print(
        f"test accuracy {np.mean(clear == y_test):.3f} (FHE simulation equals the clear model "
        f"on {np.mean(simulated == clear):.0%} of rows), predicted FHE latency "
        f"{search.best_predicted_latency_s_:.3f} s/row"
    )

    ax = search.plot_front(reference=CONCRETE_ML_DEFAULT)
    ax.set_title("breast_cancer: accuracy against FHE latency")
    OUTPUT.parent.mkdir(exist_ok=True)
    ax.figure.tight_layout()
    ax.figure.savefig(OUTPUT, dpi=120)
    print(f"wrote {OUTPUT}")


if __name__ == "__main__":
    main()
