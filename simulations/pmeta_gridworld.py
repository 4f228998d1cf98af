"""pMeta-RL's gridworld warm-up (Wang et al., arXiv 2209.10072, Section V-C), tabular, in-process,
on exact tables.

The Flower version with sampled transitions is the preset ``pmeta-gridworld`` (``fedmeta run
pmeta-gridworld``, README "pMeta-RL"); this script runs the same tasks (the ``gridworld-sizes``
family, so seed s here and in the preset draw the same goals) with exact synchronous sweeps instead
of sampled episodes.  Tasks: grid-nav goals on grids of sizes 3, 5, 7, 9, 11; the Q-tables live on
the union of the cells (the 11×11 grid), each task visiting its own sub-grid.  Per round c (C = 10),
each client from Q_i^π = Q^π, Q_i = Q^π (line 7) runs R = 3 local iterations of K = 1 synchronous
sweep of eq. (7) over its (s, a) with step 1/(1 + λ) (one application of the proximal Bellman
operator, eq. 18), then eq. (8) with η; the server applies eq. (9) (union-mean) with β.  Model
averaging: the same clients with λ = 0 (plain Bellman sweeps from Q^π) and the plain mean of the
tables (the paper's baseline).

Returns: exact expected discounted return (γ, H = 20) of the greedy policy of each table on each
task, as % of the task's optimum (value iteration), averaged over the tasks.

    python -m simulations.pmeta_gridworld --seeds 0-4
"""

from __future__ import annotations

import argparse

import numpy as np

from fedmeta.algorithms.prox import moreau_outer_step
from fedmeta.algorithms.tabular_q import proximal_bellman, union_mean
from fedmeta.tasks import task_split
from fedmeta.tasks.grid_nav import MOVES
from fedmeta.tasks.grid_sizes import GRID_SIZES, union_index
from fedmeta.tasks.tabular import TabularMDP, one_hot_policy, optimal_return, policy_return

SIZES = (3, 5, 7, 9, 11)
UNION = max(SIZES)
HORIZON = 20


def tasks(seed: int) -> list[tuple[TabularMDP, np.ndarray]]:
    """(the task's MDP on its own grid, its cells' union indices) per grid size (``gridworld-sizes``)."""
    specs = task_split("gridworld-sizes", len(SIZES), 0, seed, HORIZON, {"sizes": ",".join(map(str, SIZES))})[0]
    return [(GRID_SIZES.mdp(spec), union_index(int(spec.params["size"]), UNION)) for spec in specs]


def local_tables(mdp: TabularMDP, cells: np.ndarray, meta: np.ndarray, lam: float, eta: float, rounds: int,
                 sweeps: int, gamma: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One client's round: (auxiliary table, personalized table, visited mask), all on the union grid."""
    aux_full, visited = meta.copy(), np.zeros_like(meta)
    q = meta[cells].copy()
    for _ in range(rounds):
        for _ in range(sweeps):
            q = proximal_bellman(mdp, q, aux_full[cells], gamma, lam)  # eq. (7), step 1/(1+λ), all (s, a)
        aux_local = moreau_outer_step({"q": aux_full[cells]}, {"q": q}, lam, eta)["q"] if lam > 0 else q
        aux_full[cells] = aux_local  # eq. (8) (λ = 0: the locally trained table itself)
    visited[cells] = 1.0
    personal = meta.copy()
    personal[cells] = q
    return aux_full, personal, visited


def score(mdp: TabularMDP, cells: np.ndarray, table: np.ndarray, gamma: float) -> float:
    """Exact return of the greedy policy of ``table`` on the task, % of optimal."""
    probs = one_hot_policy(table[cells].argmax(axis=1), len(MOVES))
    return 100.0 * policy_return(mdp, probs, gamma, HORIZON) / optimal_return(mdp, gamma, HORIZON)


def run(seed: int, lam: float, eta: float, beta: float, rounds: int, local: int, sweeps: int,
        gamma: float) -> dict[str, float]:
    """pMeta-RL (PP, MP) and model averaging (MA) after ``rounds`` server rounds."""
    task_list = tasks(seed)
    shape = (UNION * UNION, len(MOVES))
    meta, avg = np.zeros(shape), np.zeros(shape)
    personals: list[np.ndarray] = []
    for _ in range(rounds):
        outs = [local_tables(mdp, cells, meta, lam, eta, local, sweeps, gamma) for mdp, cells in task_list]
        personals = [o[1] for o in outs]
        meta = (1 - beta) * meta + beta * union_mean([o[0] for o in outs], [o[2] for o in outs])  # eq. (9)
        plain = [local_tables(mdp, cells, avg, 0.0, eta, local, sweeps, gamma)[0] for mdp, cells in task_list]
        avg = np.mean(plain, axis=0)  # model averaging of the Q-tables
    return {"PP": float(np.mean([score(m, c, p, gamma) for (m, c), p in zip(task_list, personals)])),
            "MP": float(np.mean([score(m, c, meta, gamma) for m, c in task_list])),
            "MA": float(np.mean([score(m, c, avg, gamma) for m, c in task_list]))}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", default="0-4", help="'a-b' or 'a,b'")
    parser.add_argument("--lam", type=float, default=10.0)
    parser.add_argument("--eta", type=float, default=0.05, help="auxiliary step eta (eq. 8)")
    parser.add_argument("--beta", type=float, default=1.0)
    parser.add_argument("--rounds", type=int, default=10, help="C")
    parser.add_argument("--local", type=int, default=3, help="R")
    parser.add_argument("--sweeps", type=int, default=1, help="K")
    parser.add_argument("--gamma", type=float, default=0.9)
    args = parser.parse_args()
    a, _, b = args.seeds.partition("-")
    seeds = list(range(int(a), int(b) + 1)) if b else [int(s) for s in args.seeds.split(",")]
    results = [run(s, args.lam, args.eta, args.beta, args.rounds, args.local, args.sweeps, args.gamma) for s in seeds]
    for key in ("PP", "MP", "MA"):
        values = np.array([r[key] for r in results])
        print(f"{key}: {values.mean():.1f} ± {values.std(ddof=1) if len(values) > 1 else 0.0:.1f} % of optimal "
              f"(per seed: {', '.join(f'{v:.1f}' for v in values)})")


if __name__ == "__main__":
    main()
