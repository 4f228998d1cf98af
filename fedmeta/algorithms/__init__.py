"""Local solvers, the prox term, and the client algorithms (MEMRL and its baselines)."""

from fedmeta.algorithms.base import SOLVERS, LocalSolver, SolveStats
from fedmeta.algorithms import dqn, pg, sac, tabular_solver  # noqa: F401  (registration)
from fedmeta.algorithms.client import CLIENT_ALGORITHMS, ClientAlgorithm, PrivateState, RoundReport
from fedmeta.algorithms import meta, baselines, maml, pmeta  # noqa: F401  (registration)
from fedmeta.algorithms.bomrl import client as bomrl_client  # noqa: F401  (registration)

__all__ = ["CLIENT_ALGORITHMS", "SOLVERS", "ClientAlgorithm", "LocalSolver", "PrivateState", "RoundReport", "SolveStats"]
