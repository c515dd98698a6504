"""A convolutional network on encrypted images: a small Brevitas CNN on scikit-learn's 8×8 digits.

Trains the CNN with quantization-aware training (and the same network in float as a
reference), imports it with ``compile_brevitas_qat_model``, checks that the FHE simulation
equals the clear integer model on the whole test set, predicts a few test images in real FHE
(each equal to the clear integer model), and saves a figure of them with their encrypted
predictions under ``examples/output/``.

Usage: ``python examples/cnn_digits.py [--epochs 40] [--bits 3] [--rounding 6] [--fhe-rows 3]``
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import warnings

import numpy as np

from qnn_sklearn.quantization.tabulation import bootstraps
from qnn_sklearn.torch import compile_brevitas_qat_model

# The network, data and training live with the benchmarks, which compile the same CNN with
# Concrete ML too (benchmarks/anchor.py), in a venv without qnn_sklearn.
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "benchmarks"))
from cnn_task import (  # noqa: E402
    BITS,
    EPOCHS,
    ROUNDING_THRESHOLD_BITS,
    build_cnn,
    load,
    torch_predict,
    train,
)

OUTPUT = os.path.join(os.path.dirname(__file__), "output", "cnn_digits.png")


def save_figure(images, labels, predictions, path: str = OUTPUT) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(images), figsize=(2 * len(images), 2.4))
    for ax, image, label, prediction in zip(np.atleast_1d(axes), images, labels, predictions):
        ax.imshow(image[0], cmap="gray_r")
        ax.set_title(f"FHE: {prediction} (true {label})", fontsize=9)
        ax.axis("off")
    fig.tight_layout()
    os.makedirs(os.path.dirname(path), exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=EPOCHS)
    parser.add_argument("--bits", type=int, default=BITS, help="weight and activation bits")
    parser.add_argument(
        "--rounding", type=int, default=ROUNDING_THRESHOLD_BITS, help="rounding_threshold_bits"
    )
    parser.add_argument("--fhe-rows", type=int, default=3, help="test images run in real FHE (≥ 1)")
    args = parser.parse_args()
    if args.fhe_rows < 1:
        parser.error("--fhe-rows must be at least 1 (the figure shows those rows).")
    X_train, X_test, y_train, y_test = load()

    reference = train(build_cnn(None), X_train, y_train, args.epochs)
    print(f"fp32 CNN accuracy:     {np.mean(torch_predict(reference, X_test) == y_test):.3f}")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # Brevitas' export warnings
        model = train(build_cnn(args.bits), X_train, y_train, args.epochs)
        print(f"Brevitas (torch):      {np.mean(torch_predict(model, X_test) == y_test):.3f}")
        start = time.perf_counter()
        module = compile_brevitas_qat_model(model, X_train, rounding_threshold_bits=args.rounding)
    print(f"compiled in {time.perf_counter() - start:.1f} s")

    q = module.quantize_input(X_test)
    clear = module.quantized_forward(q)
    integer_predictions = module.dequantize_output(clear).argmax(axis=1)
    print(f"integer model:         {np.mean(integer_predictions == y_test):.3f}")
    simulated = module.quantized_forward(q, fhe="simulate")
    print(f"simulation == clear on all {len(q)} test rows: {np.array_equal(simulated, clear)}")

    lookups = bootstraps(module.steps)
    print(
        f"PBS per image: {sum(lookup['count'] for lookup in lookups)}, precision "
        f"{max(lookup['precision'] for lookup in lookups)} bits at most"
    )
    for report in module.bitwidth_report():
        print(
            f"  {report['layer']:<28} {report['neurons']:>4} outputs, accumulator "
            f"{report['certified_bits']:>2} bits, {report['pbs_count']:>4} PBS at "
            f"{report['pbs_precision']} bits"
        )

    rows = np.arange(args.fhe_rows)
    start = time.perf_counter()
    module.fhe_circuit.keygen()
    print(f"keygen: {time.perf_counter() - start:.1f} s")
    predictions = []
    for row in rows:
        start = time.perf_counter()
        encrypted = module.quantized_forward(q[row : row + 1], fhe="execute")
        seconds = time.perf_counter() - start
        equal = np.array_equal(encrypted, clear[row : row + 1])
        predictions.append(int(module.dequantize_output(encrypted).argmax()))
        print(
            f"FHE row {row}: {seconds:.1f} s, prediction {predictions[-1]} "
            f"(true {y_test[row]}), equal to clear: {equal}"
        )
    save_figure(X_test[rows], y_test[rows], predictions)
    print(f"saved {os.path.relpath(OUTPUT)}")


if __name__ == "__main__":
    main()
