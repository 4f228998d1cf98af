"""Vanilla policy gradient (REINFORCE), MEMRL eqs. (8)-(9).

g_i(τ) = Σ_h ∇log π(a_h|s_h) (R^h(τ) − b_h), R^h = Σ_{l≥h} γ^l r_l, averaged over the D
trajectories of the batch (eq. 9).  ``solver.baseline = "mean"`` subtracts the
leave-one-out mean of R^h over the batch (unbiased); ``"normalized"`` also divides by the
batch's standard deviation (a step-size rescaling); ``"none"`` is the paper's plain form.
``solver.entropy-coef`` > 0 adds an entropy bonus Σ_h H(π(·|s_h)) (not in the paper; off by default).
"""

from __future__ import annotations

import torch

from fedmeta.algorithms.base import SOLVERS, LocalSolver
from fedmeta.rollouts import EpisodeBatch, loo_mean_baseline, reward_to_go


@SOLVERS.register("vpg")
class VPGSolver(LocalSolver):
    """REINFORCE with discounted reward-to-go and an optional baseline."""

    def loss(self, batch: EpisodeBatch) -> torch.Tensor:
        returns = reward_to_go(batch.rewards, batch.masks, self.cfg.gamma)
        if self.cfg.baseline in ("mean", "normalized"):
            returns = returns - loo_mean_baseline(returns, batch.masks)
        if self.cfg.baseline == "normalized":
            returns = returns / (returns[batch.masks > 0].std() + 1e-8)
        dist = self.policy(batch.obs)
        log_prob = dist.log_prob(batch.actions)
        # −(1/D) Σ_τ Σ_h log π(a_h|s_h) (R^h − b_h): minimising it ascends J~_i.
        loss = -(log_prob * returns * batch.masks).sum(0).mean()
        if self.cfg.entropy_coef > 0:
            loss = loss - self.cfg.entropy_coef * (dist.entropy() * batch.masks).sum(0).mean()
        return loss
