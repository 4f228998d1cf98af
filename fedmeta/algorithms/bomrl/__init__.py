"""BO-MRL (Xu & Zhu, NeurIPS 2024): within-task algorithm, hypergradients, estimates, client algorithm."""
