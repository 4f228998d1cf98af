"""fedmeta: federated, personalized meta-reinforcement learning on Flower.

The library is plain PyTorch + gymnasium; only :mod:`fedmeta.records` imports ``flwr``.
Importing it registers the task envs with gymnasium (``gymnasium.make("fedmeta/GridNav-v0")``),
which imports gymnasium only: each env's module (MuJoCo, torch) loads when the env is made.
"""

from fedmeta.gym_envs import register_gym_envs

__version__ = "0.1.0"

register_gym_envs()
