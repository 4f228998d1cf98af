"""Tabular pMeta-RL (Wang et al., arXiv 2209.10072, Section III, eqs. 5-9): pure numpy.

Client i keeps a personalized Q-table Q_i^{π_i} and an auxiliary table Q_i^π; the server keeps
the meta Q-table Q^π.  Per local iteration r (Algorithm 1, lines 9-11):

* eq. (7), sampled proximal Q-learning on transitions (s, a, r, s') of task i:

      Q_i(s, a) ← Q_i(s, a) + η_k [r + γ max_a' Q_i(s', a') − Q_i(s, a)] − η_k λ (Q_i(s, a) − Q_i^π(s, a))

  (the paper prints "+ η_k λ/2 ∇φ_i" with ∇φ_i = 2(Q_i − Q^π); a step that *descends*
  λ/2‖Q_i − Q^π‖² needs the minus sign used here, which is also what eq. (12) does for the deep
  variant).  Its fixed point solves (1 + λ)Q = r + γ max Q' + λ Q^π, a γ/(1+λ) contraction
  (eq. 18; :func:`proximal_bellman`); with λ = 0 it is plain Q-learning (Watkins 1992), whose
  fixed point is Q* (eq. 6 without the prox term).
* eq. (8), the auxiliary table: Q_i^π ← Q_i^π − ηλ(Q_i^π − Q_i), the shared
  :func:`fedmeta.algorithms.prox.moreau_outer_step`.
* eq. (9), the server: Q̂^π(s, a) = (1 − β) Q^π(s, a) + β/N_s Σ_i Q_i^π(s, a) 1{(s, a) visited by i},
  N_s the number of clients that visited (s, a): the ``union-mean`` aggregator in
  :mod:`fedmeta.aggregation` (then the strategy's usual β step).

What a client uploads for eq. (9): its auxiliary table under the model's key and a visited
mask of the same shape (1.0 where it updated (s, a) this round, else 0.0) under
``<key>.visited``: both float parameter-shaped arrays, so the contract ("arrays of the shared
model + scalar metrics") is kept.  On a client these run as the ``tabular-q`` local solver
(:mod:`fedmeta.algorithms.tabular_solver`) under the ``pmeta`` client algorithm, on a Q-table
policy (:mod:`fedmeta.policies.table`); :func:`local_round` is the same loop in one function.
"""

from __future__ import annotations

import numpy as np

from fedmeta.algorithms.prox import moreau_outer_step
from fedmeta.tasks.tabular import TabularMDP

VISITED_SUFFIX = ".visited"


def proximal_q_update(q: np.ndarray, anchor: np.ndarray, s: int, a: int, r: float, s_next: int, terminated: bool,
                      lr: float, gamma: float, lam: float) -> None:
    """One in-place step of eq. (7) on transition (s, a, r, s'); ``anchor`` is Q_i^π (λ = 0: Q-learning)."""
    bootstrap = 0.0 if terminated else gamma * float(q[s_next].max())
    q[s, a] += lr * (r + bootstrap - q[s, a]) - lr * lam * (q[s, a] - anchor[s, a])


def proximal_bellman(mdp: TabularMDP, q: np.ndarray, anchor: np.ndarray, gamma: float, lam: float) -> np.ndarray:
    """The operator whose fixed point eq. (7) reaches: (r + γ max_a' Q(s', a') + λ Q^π) / (1 + λ) (eq. 18)."""
    value = q.max(axis=1)
    if mdp.terminal is not None:
        value = np.where(mdp.terminal, 0.0, value)
    return (mdp.reward + gamma * value[mdp.next_state] + lam * anchor) / (1.0 + lam)


def local_round(mdp: TabularMDP, q_meta: np.ndarray, personal: np.ndarray, rounds: int, steps: int, lr: float,
                aux_lr: float, gamma: float, lam: float, epsilon: float, horizon: int,
                rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """R × [K ε-greedy transitions, each an eq. (7) step; eq. (8)] from Q_i^π = Q^π.

    Returns (auxiliary table Q_i^π, personalized table Q_i, visited mask): what eq. (9) needs.
    Episodes start from ``mdp.start`` and restart after ``horizon`` steps or a terminal state.
    """
    aux, q = q_meta.copy(), personal.copy()
    visited = np.zeros_like(q)
    s, t = int(rng.choice(mdp.num_states, p=mdp.start)), 0
    for _ in range(rounds):
        for _ in range(steps):
            a = int(rng.integers(mdp.num_actions)) if rng.random() < epsilon else int(q[s].argmax())
            s_next = int(mdp.next_state[s, a])
            terminated = bool(mdp.terminal[s_next]) if mdp.terminal is not None else False
            proximal_q_update(q, aux, s, a, float(mdp.reward[s, a]), s_next, terminated, lr, gamma, lam)
            visited[s, a] = 1.0
            s, t = s_next, t + 1
            if terminated or t >= horizon:
                s, t = int(rng.choice(mdp.num_states, p=mdp.start)), 0
        aux = moreau_outer_step({"q": aux}, {"q": q}, lam, aux_lr)["q"]  # eq. (8)
    return aux, q, visited


def union_mean(tables: list[np.ndarray], visited: list[np.ndarray]) -> np.ndarray:
    """(1/N_s) Σ_i Q_i^π(s, a) 1{visited_i(s, a)}, the plain mean where no client visited (s, a) (eq. 9)."""
    stacked, mask = np.stack(tables), np.stack(visited) > 0
    counts = mask.sum(axis=0)
    union = np.where(mask, stacked, 0.0).sum(axis=0) / np.maximum(counts, 1)
    return np.where(counts > 0, union, stacked.mean(axis=0))
