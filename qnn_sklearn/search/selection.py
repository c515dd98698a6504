"""Choosing among candidates by score and predicted latency: the budget and the front.

Both read only the two numbers per candidate, so they work on any ``cv_results_``-like arrays
(higher score is better, lower latency is better). A candidate whose fit failed has a NaN
score and never qualifies.
"""

from __future__ import annotations

import numpy as np


def select_candidate(scores, latencies, max_latency_s=None, min_score=None) -> int:
    """Index of the candidate to refit.

    With ``max_latency_s``: the most accurate candidate within it (ties: the cheaper). With
    ``min_score``: the cheapest candidate that reaches it (ties: the more accurate). With
    neither: the most accurate (ties: the cheaper). ValueError naming the cheapest latency and
    the best score found when no candidate qualifies.
    """
    scores = np.asarray(scores, dtype=np.float64)
    latencies = np.asarray(latencies, dtype=np.float64)
    valid = np.isfinite(scores) & np.isfinite(latencies)
    if not valid.any():
        raise ValueError("Every candidate failed to fit or score: no candidate to choose.")
    qualifies = valid.copy()
    if max_latency_s is not None:
        qualifies &= latencies <= max_latency_s
    if min_score is not None:
        qualifies &= scores >= min_score
    if not qualifies.any():
        budget = (
            f"within max_latency_s={max_latency_s:g} s"
            if max_latency_s is not None
            else f"with a score >= min_score={min_score:g}"
        )
        raise ValueError(
            f"No candidate {budget}: the cheapest predicted latency found is "
            f"{latencies[valid].min():.4g} s per row and the best score "
            f"{scores[valid].max():.4g}. Relax the budget or search smaller, lower-bit models."
        )
    candidates = np.flatnonzero(qualifies)
    if min_score is not None:
        order = np.lexsort((-scores[candidates], latencies[candidates]))
    else:
        order = np.lexsort((latencies[candidates], -scores[candidates]))
    return int(candidates[order[0]])


def pareto_front(scores, latencies) -> np.ndarray:
    """Indices of the candidates no other one beats on both counts, by increasing latency.

    A candidate is dominated when another has a score at least as high and a latency at least
    as low, and is strictly better on one of them; equal points are both kept.
    """
    scores = np.asarray(scores, dtype=np.float64)
    latencies = np.asarray(latencies, dtype=np.float64)
    valid = np.flatnonzero(np.isfinite(scores) & np.isfinite(latencies))
    s, t = scores[valid, None], latencies[valid, None]
    no_worse = (s.T >= s) & (t.T <= t)  # [i, j]: j is no worse than i on both
    better = (s.T > s) | (t.T < t)
    dominated = (no_worse & better).any(axis=1)
    front = valid[~dominated]
    return front[np.lexsort((-scores[front], latencies[front]))]
