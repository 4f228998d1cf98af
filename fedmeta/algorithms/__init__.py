"""Local solvers, the prox term and the personalization round."""

from fedmeta.algorithms.base import SOLVERS, LocalSolver, SolveStats
from fedmeta.algorithms import pg  # noqa: F401  (registration)

__all__ = ["SOLVERS", "LocalSolver", "SolveStats"]
