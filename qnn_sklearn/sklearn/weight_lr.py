"""The optimizer's parameter groups with each network weight at its layer's learning-rate limit."""

from __future__ import annotations

import torch

STEP_SIZED_OPTIMIZERS = (torch.optim.Adam, torch.optim.Adamax, torch.optim.NAdam, torch.optim.RAdam)
"""Optimizers (and their subclasses, AdamW among them) that move each weight by about ``lr``
per step whatever the scale of its gradient: the limit's reason (network.WEIGHT_LR_LIMIT)
holds for them only. Under SGD a weight moves by ``lr`` times its gradient, and the limit took
digits (SGD, lr 0.1, momentum 0.9, seeds 0–2) from 0.92 to 0.23."""


def limits_apply(optimizer) -> bool:
    """Whether skorch's ``optimizer`` setting is one of ``STEP_SIZED_OPTIMIZERS``."""
    return isinstance(optimizer, type) and issubclass(optimizer, STEP_SIZED_OPTIMIZERS)


def limited_weight_groups(
    groups: list[dict], lr: float, limits: list[tuple[torch.nn.Parameter, float]]
) -> list[dict]:
    """``groups`` (torch's parameter groups, as skorch builds them, a user's
    ``optimizer__param_groups`` included) with each weight of ``limits`` whose limit is below
    its group's lr moved to a group at that limit (one per group and limit), the group's
    other settings kept. A group without an ``lr`` of its own trains at ``lr``.

    A weight whose limit does not bind stays in its group, since the optimizer steps each
    group apart: on breast_cancer's network (lr 1e-3, binding no layer), Adam's step took 0.23 ms
    with a group per weight against 0.15 ms with one (issue 15; a training step is ~3 ms)."""
    limit_of = {id(parameter): limit for parameter, limit in limits}
    limited = []
    for group in groups:
        group_lr = group.get("lr", lr)
        kept, at_limit = [], {}
        for parameter in group["params"]:
            limit = limit_of.get(id(parameter), group_lr)
            if limit < group_lr:
                at_limit.setdefault(limit, []).append(parameter)
            else:
                kept.append(parameter)
        if kept:
            limited.append({**group, "params": kept})
        limited.extend(
            {**group, "params": parameters, "lr": limit} for limit, parameters in at_limit.items()
        )
    return limited
