"""Drawing a search's candidates: score against predicted FHE latency, the front joined."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np


def plot_front(
    scores, latencies, front, best_index=None, ax=None, reference=None, score_label="score"
):
    """Every candidate as a point, the Pareto front as a line, the chosen one circled.

    ``reference`` marks another model, e.g. Concrete ML's default on the same task: a mapping
    with ``"latency_s"``, ``"score"`` and optionally ``"label"``. The latency axis is
    logarithmic: a linear model and a hidden layer differ by orders of magnitude. Returns the
    matplotlib Axes.
    """
    import matplotlib.pyplot as plt  # an optional dependency, needed only to draw

    if reference is not None and (
        not isinstance(reference, Mapping) or not {"latency_s", "score"} <= set(reference)
    ):
        raise ValueError(
            "reference must be a mapping with 'latency_s' and 'score' (and optionally "
            f"'label'), got {reference!r:.100}."
        )
    if ax is None:
        _, ax = plt.subplots(figsize=(6, 4))
    scores, latencies = np.asarray(scores, float), np.asarray(latencies, float)
    ax.scatter(latencies, scores, color="0.65", s=18, label="candidates", zorder=2)
    ax.plot(latencies[front], scores[front], "o-", color="C0", label="Pareto front", zorder=3)
    if best_index is not None:
        ax.scatter(
            latencies[best_index],
            scores[best_index],
            s=160,
            facecolors="none",
            edgecolors="C3",
            linewidths=2,
            label="chosen",
            zorder=4,
        )
    if reference is not None:
        ax.scatter(
            [reference["latency_s"]],
            [reference["score"]],
            marker="*",
            s=180,
            color="C1",
            label=reference.get("label", "reference"),
            zorder=4,
        )
    ax.set_xscale("log")
    ax.set_xlabel("predicted FHE latency per row (s)")
    ax.set_ylabel(f"cross-validated {score_label}")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(loc="best", fontsize="small")
    return ax
