"""Regression on encrypted data: NeuralNetRegressor on make_regression (or diabetes).

Trains a 3-bit quantization-aware MLP, compares it with a float MLP of the same widths, compiles
it, checks that the FHE simulation equals the clear integer model, and predicts a few rows in
real FHE.

Usage: ``python examples/regression.py [--dataset make_regression|diabetes] [--fhe-rows 2]``
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch
from sklearn.datasets import load_diabetes, make_regression
from sklearn.metrics import r2_score
from sklearn.model_selection import train_test_split
from sklearn.neural_network import MLPRegressor
from sklearn.preprocessing import StandardScaler

from qnn_sklearn import NeuralNetRegressor


def load(name: str):
    if name == "diabetes":
        X, y = load_diabetes(return_X_y=True)
    else:
        X, y = make_regression(n_samples=2000, n_features=20, noise=10, random_state=0)
    X_train, X_test, y_train, y_test = train_test_split(X, y, test_size=0.25, random_state=0)
    x_scaler = StandardScaler().fit(X_train)
    y_mean, y_std = y_train.mean(), y_train.std()
    return (
        x_scaler.transform(X_train).astype(np.float32),
        x_scaler.transform(X_test).astype(np.float32),
        ((y_train - y_mean) / y_std).astype(np.float32),
        ((y_test - y_mean) / y_std).astype(np.float32),
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--dataset", choices=["make_regression", "diabetes"], default="make_regression"
    )
    parser.add_argument("--epochs", type=int, default=84, help="84: 2000 steps on make_regression")
    parser.add_argument("--rounding", type=int, default=6, help="rounding_threshold_bits")
    parser.add_argument("--fhe-rows", type=int, default=2, help="rows predicted in real FHE")
    args = parser.parse_args()
    X_train, X_test, y_train, y_test = load(args.dataset)
    n_features = X_train.shape[1]

    # A float reference with the same widths (2 hidden layers of 4 × n_features neurons).
    torch.manual_seed(0)
    reference = MLPRegressor(
        hidden_layer_sizes=(4 * n_features, 4 * n_features),
        learning_rate_init=1e-3,
        batch_size=64,
        max_iter=args.epochs,
        random_state=0,
    ).fit(X_train, y_train)
    print(f"float MLP (sklearn)          R² = {r2_score(y_test, reference.predict(X_test)):.3f}")

    model = NeuralNetRegressor(
        module__n_layers=3,
        module__n_w_bits=3,
        module__n_a_bits=3,
        module__n_accum_bits=8,
        max_epochs=args.epochs,
        lr=1e-3,
        batch_size=64,
        random_state=0,
        rounding_threshold_bits=args.rounding,
    )
    start = time.perf_counter()
    model.fit(X_train, y_train)
    print(f"trained in {time.perf_counter() - start:.0f}s")
    torch_prediction = model.forward(X_test).detach().numpy()[:, 0]
    clear = model.predict(X_test)
    print(f"3-bit QAT, Brevitas (torch)  R² = {r2_score(y_test, torch_prediction):.3f}")
    print(f"3-bit QAT, integer model     R² = {r2_score(y_test, clear):.3f}")

    start = time.perf_counter()
    circuit = model.compile(X_train)
    print(f"compiled in {time.perf_counter() - start:.1f}s")
    for layer in model.fhe_report()["layers"]:
        lookups = (
            f"{layer['pbs_count']} PBS at {layer['pbs_precision']} bits"
            if layer["pbs_count"]
            else "output, dequantized by the client"
        )
        print(
            f"  {layer['layer']}: {layer['neurons']} neurons, certified accumulator "
            f"{layer['certified_bits']} bits, {lookups}"
        )

    n_sim = min(200, len(X_test))
    start = time.perf_counter()
    simulated = model.predict(X_test[:n_sim], fhe="simulate")
    print(
        f"FHE simulation on {n_sim} rows ({time.perf_counter() - start:.1f}s): "
        f"R² = {r2_score(y_test[:n_sim], simulated):.3f}, equal to clear on "
        f"{np.mean(simulated == clear[:n_sim]):.1%} of rows"
    )

    if args.fhe_rows:
        start = time.perf_counter()
        circuit.keygen(force=True)
        print(f"keygen {time.perf_counter() - start:.1f}s")
        for index in range(args.fhe_rows):
            start = time.perf_counter()
            encrypted = model.predict(X_test[index : index + 1], fhe="execute")[0]
            print(
                f"  row {index}: FHE {encrypted:+.4f}, clear {clear[index]:+.4f}, "
                f"target {y_test[index]:+.4f} ({time.perf_counter() - start:.2f}s)"
            )


if __name__ == "__main__":
    main()
