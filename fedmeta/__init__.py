"""fedmeta: federated, personalized meta-reinforcement learning on Flower.

The library is plain PyTorch + gymnasium; only :mod:`fedmeta.records` imports ``flwr``.
"""

__version__ = "0.1.0"
