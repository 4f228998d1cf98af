"""Policies (what is federated and personalized)."""

from fedmeta.policies.mlp import CategoricalMLP, GaussianMLP, Policy, make_policy

__all__ = ["CategoricalMLP", "GaussianMLP", "Policy", "make_policy"]
