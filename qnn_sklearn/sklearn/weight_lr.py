"""The optimizer's parameter groups with each network weight at its layer's learning-rate limit."""

from __future__ import annotations

import torch


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
