"""Greedy Policy Search (Lyzhov et al., UAI 2020) over a pool of test-time sub-policies.

Input: the held-out predictions of every candidate sub-policy, ``cand[j]`` = log-probabilities ``(N, C)``
of candidate ``j`` (already averaged over the ensemble members, if any). A policy is a multiset of
candidates; its prediction is the average of its candidates' probabilities. Starting from the empty
policy, each greedy step adds the candidate (repeats allowed) whose addition gives the best criterion:

* ``"cnll"`` — the *calibrated* NLL: the NLL after fitting a temperature to the new policy's predictions
  on the same held-out data (the paper's criterion);
* ``"nll"`` — the raw NLL;
* ``"acc"`` — the error rate (the paper's ablation; ties go to the lowest index).

All candidates of a step are scored at once (batched temperature fits), without a host sync.
"""
from __future__ import annotations

import math

import torch

from ibnb.core.metrics import accuracy, fit_temperature, nll

CRITERIA = ("cnll", "nll", "acc")


def policy_loss(logp: torch.Tensor, y: torch.Tensor, criterion: str = "cnll") -> torch.Tensor:
    """Loss (lower is better) of predictions ``(..., N, C)``: calibrated NLL, NLL or error rate."""
    if criterion == "cnll":
        return nll(logp, y, fit_temperature(logp, y))
    if criterion == "nll":
        return nll(logp, y)
    if criterion == "acc":
        return 1 - accuracy(logp, y)
    raise ValueError(f"Unknown GPS criterion {criterion!r}; use one of {CRITERIA}")


def greedy_step(current: torch.Tensor | None, size: int, cand: torch.Tensor, y: torch.Tensor,
                criterion: str = "cnll") -> tuple[int, torch.Tensor]:
    """One greedy step: ``current`` is the log-probabilities of the policy so far (``size`` candidates;
    ``None`` when empty), ``cand`` is ``(M, N, C)``. Returns (index of the best candidate, the ``M`` losses
    of the extended policies)."""
    if current is None or size == 0:
        extended = cand
    else:  # log((size·p + p_j) / (size + 1)) for every candidate j at once
        extended = torch.logaddexp(current + math.log(size), cand) - math.log(size + 1)
    losses = policy_loss(extended, y, criterion)
    return int(torch.argmin(losses)), losses


def greedy_policy_search(cand: torch.Tensor, y: torch.Tensor, length: int, criterion: str = "cnll"):
    """Greedy policy of ``length`` candidates: returns ``(indices, losses)`` — the chosen candidate per
    step, and the criterion of the policy after each step."""
    current, chosen, trace = None, [], []
    for size in range(length):
        j, losses = greedy_step(current, size, cand, y, criterion)
        chosen.append(j)
        trace.append(float(losses[j]))
        current = cand[j] if current is None else (
            torch.logaddexp(current + math.log(size), cand[j]) - math.log(size + 1))
    return chosen, trace
