"""The seed's experiment: why quantization-aware training with pruning is needed for FHE.

On Concrete ML's checkerboard (see ``checkerboard()`` below) we train, for several hidden widths:

* an fp32 torch MLP (2 → h → h → 2, ReLU);
* its 3-bit post-training quantization (``build_torch_model`` on the fp32 net);
* 3-bit quantization-aware networks (``NeuralNetClassifier``) with per-neuron pruning to an
  8-bit accumulator (``n_accum_bits=8``) and without it (``n_accum_bits=32``).

It prints the seed's table (accuracy, mean and max certified accumulator bits over the layers)
and saves the decision boundaries of the fp32 net, an 8-bit-accumulator network retrained with
its accumulators rounded to ``--rounding`` bits, and that network's FHE simulation (with a few
real FHE points) to ``examples/output/checkerboard.png``.

Usage: ``python examples/checkerboard.py [--hidden 8 16 100] [--epochs 100] [--fhe-points 4]``
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import skorch  # noqa: E402
import torch  # noqa: E402
from sklearn.model_selection import train_test_split  # noqa: E402

from qnn_sklearn import NeuralNetClassifier  # noqa: E402
from qnn_sklearn.torch import build_torch_model  # noqa: E402

OUTPUT = Path(__file__).resolve().parent / "output"


def checkerboard():
    """Concrete ML's checkerboard: a 100×100 grid in [0, 1]², label = parity(rint(3x)) XOR
    parity(rint(3y)), N(0, 0.01²) noise on the points; 9500 train / 500 test points."""
    axis = np.linspace(0, 1, 100)
    xx, yy = np.meshgrid(axis, axis)
    points = np.c_[xx.ravel(), yy.ravel()]
    labels = (np.rint(3 * points[:, 0]) % 2).astype(int) ^ (np.rint(3 * points[:, 1]) % 2).astype(
        int
    )
    points = points + np.random.RandomState(0).normal(0, 0.01, points.shape)
    return train_test_split(points, labels, test_size=500 / 10000, random_state=42)


class MLP(torch.nn.Module):
    def __init__(self, input_dim: int = 2, hidden: int = 16, n_outputs: int = 2):
        super().__init__()
        self.layers = torch.nn.Sequential(
            torch.nn.Linear(input_dim, hidden),
            torch.nn.ReLU(),
            torch.nn.Linear(hidden, hidden),
            torch.nn.ReLU(),
            torch.nn.Linear(hidden, n_outputs),
        )

    def forward(self, x):
        return self.layers(x)


def train_fp32(hidden: int, X, y, epochs: int):
    torch.manual_seed(0)
    net = skorch.NeuralNetClassifier(
        MLP,
        module__hidden=hidden,
        criterion=torch.nn.CrossEntropyLoss,
        optimizer=torch.optim.Adam,
        lr=1e-3,
        batch_size=64,
        max_epochs=epochs,
        train_split=None,
        iterator_train__shuffle=True,
        verbose=0,
    )
    return net.fit(X, y)


def train_qat(hidden: int, X, y, epochs: int, n_accum_bits: int, rounding=None):
    return NeuralNetClassifier(
        module__n_layers=3,
        module__n_w_bits=3,
        module__n_a_bits=3,
        module__n_accum_bits=n_accum_bits,
        module__n_hidden_neurons_multiplier=hidden // 2,
        lr=1e-3,
        batch_size=64,
        max_epochs=epochs,
        random_state=0,
        rounding_threshold_bits=rounding,
    ).fit(X, y)


def accumulator_bits(module) -> tuple[float, int]:
    """Mean and max certified accumulator bits over the linear layers of a QuantizedModule."""
    bits = [layer["certified_bits"] for layer in module.bitwidth_report()]
    return float(np.mean(bits)), int(max(bits))


def print_table(widths, rows) -> None:
    header = "| method | " + " | ".join(f"{h} hidden" for h in widths) + " |"
    print(header)
    print("|---" * (len(widths) + 1) + "|")
    for name, cells in rows.items():
        print(f"| {name} | " + " | ".join(cells) + " |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hidden", type=int, nargs="+", default=[8, 16, 100])
    parser.add_argument("--epochs", type=int, default=100)
    parser.add_argument("--plot-hidden", type=int, default=16, help="width to plot")
    parser.add_argument("--rounding", type=int, default=4, help="rounding bits of the plotted net")
    parser.add_argument("--grid", type=int, default=60, help="plot grid points per axis")
    parser.add_argument("--fhe-points", type=int, default=4, help="real FHE points on the plot")
    args = parser.parse_args()
    OUTPUT.mkdir(parents=True, exist_ok=True)

    # the generator's raw points in [0, 1]², as in the seed's experiment: standardizing would
    # put the middle boundary (x = 0.5) exactly on the input grid's zero level
    X_train, X_test, y_train, y_test = (
        part.astype(np.float32) if part.dtype.kind == "f" else part for part in checkerboard()
    )

    cells = {
        "fp32 accuracy": [],
        "3-bit PTQ accuracy": [],
        "3-bit PTQ accumulator bits (mean / max)": [],
        "3-bit QAT, pruned (n_accum_bits=8) accuracy": [],
        "  accumulator bits (mean / max)": [],
        "3-bit QAT, unpruned (n_accum_bits=32) accuracy": [],
        "  accumulator bits (mean / max) ": [],
        "8-bit PTQ": [],
    }
    models = {}
    for hidden in args.hidden:
        start = time.perf_counter()
        fp32 = train_fp32(hidden, X_train, y_train, args.epochs)
        cells["fp32 accuracy"].append(f"{np.mean(fp32.predict(X_test) == y_test):.3f}")

        ptq = build_torch_model(fp32.module_, X_train, n_bits=3)
        cells["3-bit PTQ accuracy"].append(
            f"{np.mean(ptq.forward(X_test).argmax(1) == y_test):.3f}"
        )
        cells["3-bit PTQ accumulator bits (mean / max)"].append(
            "{:.1f} / {}".format(*accumulator_bits(ptq))
        )
        try:  # an unpruned 8-bit net may need a lookup over 16 bits: FHE cannot run it
            ptq8 = build_torch_model(fp32.module_, X_train, n_bits=8)
            mean, top = accumulator_bits(ptq8)
            accuracy = np.mean(ptq8.forward(X_test).argmax(1) == y_test)
            cells["8-bit PTQ"].append(f"{accuracy:.3f}, {mean:.1f} / {top} bits")
        except ValueError as error:
            cells["8-bit PTQ"].append("refused: " + str(error).split(";")[0])

        for n_accum_bits, acc_key, bits_key in (
            (8, "3-bit QAT, pruned (n_accum_bits=8) accuracy", "  accumulator bits (mean / max)"),
            (
                32,
                "3-bit QAT, unpruned (n_accum_bits=32) accuracy",
                "  accumulator bits (mean / max) ",
            ),
        ):
            qat = train_qat(hidden, X_train, y_train, args.epochs, n_accum_bits)
            cells[acc_key].append(f"{np.mean(qat.predict(X_test) == y_test):.3f}")
            cells[bits_key].append("{:.1f} / {}".format(*accumulator_bits(qat.quantized_module_)))
            models[(hidden, n_accum_bits)] = qat
        models[(hidden, "fp32")] = fp32
        print(f"{hidden} hidden done in {time.perf_counter() - start:.0f}s", flush=True)

    print()
    print_table(args.hidden, cells)
    if args.plot_hidden in args.hidden:
        plot(models, args, X_train, y_train, X_test, y_test)


def plot(models, args, X_train, y_train, X_test, y_test) -> None:
    """Decision boundaries: fp32, integer model, FHE simulation (+ real FHE points), for the
    pruned network retrained with its accumulators rounded to ``--rounding`` bits."""
    fp32 = models[(args.plot_hidden, "fp32")]
    qat = train_qat(args.plot_hidden, X_train, y_train, args.epochs, 8, rounding=args.rounding)
    start = time.perf_counter()
    circuit = qat.compile(X_train)
    print(
        f"\nplotted net: {args.plot_hidden} hidden, pruned, rounding_threshold_bits="
        f"{args.rounding}: integer accuracy {np.mean(qat.predict(X_test) == y_test):.3f}, "
        f"{circuit.programmable_bootstrap_count} PBS ({qat.fhe_report()['program']} program), "
        "compiled in "
        f"{time.perf_counter() - start:.1f}s"
    )

    lo, hi = X_test.min(0) - 0.2, X_test.max(0) + 0.2
    gx, gy = np.meshgrid(np.linspace(lo[0], hi[0], args.grid), np.linspace(lo[1], hi[1], args.grid))
    grid = np.c_[gx.ravel(), gy.ravel()].astype(np.float32)
    start = time.perf_counter()
    surfaces = {
        "fp32 (torch)": fp32.predict(grid),
        "3-bit QAT integer (fhe=disable)": qat.predict(grid),
        "FHE simulation (fhe=simulate)": qat.predict(grid, fhe="simulate"),
    }
    simulated_s = time.perf_counter() - start
    agreement = np.mean(surfaces["FHE simulation (fhe=simulate)"] == surfaces[list(surfaces)[1]])
    print(f"grid of {len(grid)} points simulated in {simulated_s:.0f}s; == clear: {agreement:.2%}")

    fhe_points, fhe_labels = np.empty((0, 2), np.float32), np.empty(0, int)
    if args.fhe_points:
        start = time.perf_counter()
        circuit.keygen(force=True)
        print(f"keygen {time.perf_counter() - start:.1f}s")
        fhe_points = X_test[: args.fhe_points]
        fhe_labels = []
        for point in fhe_points:
            start = time.perf_counter()
            fhe_labels.append(int(qat.predict(point[None], fhe="execute")[0]))
            print(f"  FHE point {point}: {fhe_labels[-1]} in {time.perf_counter() - start:.2f}s")
        fhe_labels = np.array(fhe_labels)
        clear = qat.predict(fhe_points)
        print(f"real FHE == clear on {np.sum(fhe_labels == clear)}/{len(clear)} points")

    figure, axes = plt.subplots(1, 3, figsize=(15, 5), sharex=True, sharey=True)
    for axis, (title, labels) in zip(axes, surfaces.items()):
        axis.imshow(
            labels.reshape(gx.shape),
            origin="lower",
            extent=(lo[0], hi[0], lo[1], hi[1]),
            cmap="coolwarm",
            alpha=0.4,
            vmin=0,
            vmax=1,
        )
        axis.scatter(*X_test.T, c=y_test, cmap="coolwarm", s=6, vmin=0, vmax=1)
        axis.set_title(title)
    if len(fhe_points):
        axes[2].scatter(
            *fhe_points.T,
            c=fhe_labels,
            cmap="coolwarm",
            vmin=0,
            vmax=1,
            s=120,
            marker="*",
            edgecolors="black",
            label="real FHE (fhe=execute)",
        )
        axes[2].legend(loc="upper right")
    figure.suptitle(
        f"Checkerboard, {args.plot_hidden} hidden neurons, 3-bit QAT with n_accum_bits=8, "
        f"rounding_threshold_bits={args.rounding}"
    )
    figure.tight_layout()
    path = OUTPUT / "checkerboard.png"
    figure.savefig(path, dpi=100)
    print(f"saved {path}")


if __name__ == "__main__":
    main()
