"""Rollout collection and return computation."""

from fedmeta.rollouts.returns import discounted_return, loo_mean_baseline, reward_to_go
from fedmeta.rollouts.sampler import EpisodeBatch, collect_episodes

__all__ = ["EpisodeBatch", "collect_episodes", "discounted_return", "loo_mean_baseline", "reward_to_go"]
