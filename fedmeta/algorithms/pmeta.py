"""pMeta-RL (Wang et al., "On the Convergence Theory of Meta Reinforcement Learning with
Personalized Policies", arXiv 2209.10072), Algorithm 1, deep variant, as a client algorithm.

Per server round c, on client i (lines 7-12):

    φ_i ← ω,  ω_i ← ω                                             (line 7)
    repeat R times (``prox.local-rounds``):
        φ_i ← φ_i − α(∇J(φ_i; D_i) + λ(φ_i − ω_i))   K times      (eq. 12, ``prox.inner-steps``)
        ω_i ← ω_i − ηλ(ω_i − φ_i)                                 (eq. 13, ``prox.outer-lr`` = η)

and the server mixes ω ← (1 − β)ω + β·mean_i ω_i (eq. 14, ``fed.beta``; the ``memrl`` strategy).
J is the local solver's RL loss: the DQN TD loss for the paper's CartPole / MountainCar runs
(``solver.name = "dqn"``, :mod:`fedmeta.algorithms.dqn`), or the policy-gradient loss of any
on-policy solver.  The proximal term and both updates are the shared ones
(:mod:`fedmeta.algorithms.prox`, via :func:`fedmeta.algorithms.meta.moreau_round`), so pMeta-RL
is MEMRL's / pFedMe's local loop with the personalized model restarted from ω each round
(line 7; ``memrl`` with ``prox.init = "personal"`` is the warm-started variant).

φ_i (the personalized policy, "PP") and the solver's private state (replay buffer, target
network, optimizer, ε-schedule position) stay on the client; only ω_i is uploaded.  The paper's
eq. (6)-(7) print the prox gradient with a + sign; descent on λ/2‖φ − ω‖² needs −λ(φ − ω), which
is what eq. (12) and this code use.
"""

from __future__ import annotations

import dataclasses

from fedmeta.algorithms.client import CLIENT_ALGORITHMS
from fedmeta.algorithms.meta import Memrl
from fedmeta.config import ProxConfig


@CLIENT_ALGORITHMS.register("pmeta")
class PMetaRL(Memrl):
    """pMeta-RL: R × [eq. 12 on φ_i; eq. 13 on ω_i] from φ_i = ω_i = ω; upload ω_i (module docstring).
    MEMRL's round (:class:`~fedmeta.algorithms.meta.Memrl`) with φ_i restarted from ω."""

    def local_prox(self) -> ProxConfig:
        return dataclasses.replace(self.cfg.prox, init="meta")  # Algorithm 1, line 7: φ_i ← ω
