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
    ``optimizer__param_groups`` included) with each weight of ``limits`` moved to a group of
    its own at ``min(its group's lr, its limit)``, the group's other settings kept. A group
    without an ``lr`` of its own trains at ``lr``."""
    limit_of = {id(parameter): limit for parameter, limit in limits}
    limited = []
    for group in groups:
        group_lr = group.get("lr", lr)
        rest = [p for p in group["params"] if id(p) not in limit_of]
        if rest:
            limited.append({**group, "params": rest})
        for parameter in group["params"]:
            if id(parameter) in limit_of:
                limit = min(group_lr, limit_of[id(parameter)])
                limited.append({**group, "params": [parameter], "lr": limit})
    return limited
