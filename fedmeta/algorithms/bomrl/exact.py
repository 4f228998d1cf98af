"""Exact tabular quantities for BO-MRL, differentiable in the logits table (tests and analysis).

For a deterministic :class:`~fedmeta.tasks.tabular.TabularMDP` and a softmax policy with logits
φ (S, A), in the infinite-horizon discounted setting of the paper (Section 3; FrozenLake's
100-step limit changes returns by at most γ¹⁰⁰ ≈ 2·10⁻¹⁰ at γ = 0.8):

* :func:`values`: V^π = (I − γP_π)⁻¹ r_π and Q^π(s, a) = r(s, a) + γ V^π(s'), by a linear solve,
  so ``torch.autograd`` gives ∇_φ Q^{π_φ} exactly;
* :func:`visitation`: the unnormalised discounted state visitation d^π(s) = Σ_t γ^t P(s_t = s)
  = ν^π(s)/(1 − γ) over the states where an action is taken (terminal states excluded);
* :func:`expected_return`: J(π) = ρᵀ V^π;
* :func:`grad_q_appendix_c`: Σ_{s,a} w(s, a) ∇_φ Q^{π_φ}(s, a) by Appendix C, eq. (5).
"""

from __future__ import annotations

import torch

from fedmeta.tasks.tabular import TabularMDP


def _terminal(mdp: TabularMDP) -> torch.Tensor:
    if mdp.terminal is None:
        return torch.zeros(mdp.num_states, dtype=torch.bool)
    return torch.as_tensor(mdp.terminal, dtype=torch.bool)


def transition_matrix(mdp: TabularMDP, probs: torch.Tensor) -> torch.Tensor:
    """P_π(s, s') = Σ_a π(a|s) 1[next(s, a) = s'], with no transitions out of terminal states."""
    nxt = torch.as_tensor(mdp.next_state)
    onehot = torch.nn.functional.one_hot(nxt, mdp.num_states).to(probs.dtype)  # (S, A, S)
    matrix = (probs[:, :, None] * onehot).sum(1)
    return matrix * (~_terminal(mdp)).to(probs.dtype)[:, None]


def values(mdp: TabularMDP, logits: torch.Tensor, gamma: float) -> tuple[torch.Tensor, torch.Tensor]:
    """(V^π (S,), Q^π (S, A)) of the softmax policy with ``logits``; terminal states have value 0."""
    probs = torch.softmax(logits, -1)
    reward = torch.as_tensor(mdp.reward, dtype=logits.dtype)
    live = (~_terminal(mdp)).to(logits.dtype)
    r_pi = (probs * reward).sum(-1) * live
    eye = torch.eye(mdp.num_states, dtype=logits.dtype)
    v = torch.linalg.solve(eye - gamma * transition_matrix(mdp, probs), r_pi)
    q = (reward + gamma * v[torch.as_tensor(mdp.next_state)]) * live[:, None]
    return v, q


def visitation(mdp: TabularMDP, logits: torch.Tensor, gamma: float,
               start: torch.Tensor | None = None) -> torch.Tensor:
    """d^π(s) = Σ_t γ^t P(s_t = s | s_0 ~ start), terminal states excluded (start: the MDP's ρ)."""
    probs = torch.softmax(logits, -1)
    rho = torch.as_tensor(mdp.start, dtype=logits.dtype) if start is None else start
    eye = torch.eye(mdp.num_states, dtype=logits.dtype)
    d = torch.linalg.solve((eye - gamma * transition_matrix(mdp, probs)).T, rho)
    return d * (~_terminal(mdp)).to(logits.dtype)


def expected_return(mdp: TabularMDP, logits: torch.Tensor, gamma: float) -> torch.Tensor:
    """J(π) = Σ_s ρ(s) V^π(s)."""
    return torch.as_tensor(mdp.start, dtype=logits.dtype) @ values(mdp, logits, gamma)[0]


def grad_q_appendix_c(mdp: TabularMDP, logits: torch.Tensor, weights: torch.Tensor, gamma: float) -> torch.Tensor:
    """Σ_{s,a} w(s,a) ∇_φ Q^{π_φ}(s, a) (S, A) by Appendix C eq. (5), unnormalised:
    ∇_{φ(s',a')} Q(s, a) = γ d^{next(s,a)}(s') π(a'|s') A(s', a'), d^{x} the visitation from state x."""
    logits = logits.detach()
    probs = torch.softmax(logits, -1)
    v, q = values(mdp, logits, gamma)
    adv = (q - v[:, None]) * (~_terminal(mdp)).to(logits.dtype)[:, None]
    nxt = torch.as_tensor(mdp.next_state)
    live = (~_terminal(mdp)).to(logits.dtype)
    start = torch.zeros(mdp.num_states, dtype=logits.dtype).index_add_(0, nxt.reshape(-1),
                                                                        (weights * live[:, None]).reshape(-1))
    d = visitation(mdp, logits, gamma, start=gamma * start)
    return d[:, None] * probs * adv
