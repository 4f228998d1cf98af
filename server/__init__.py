"""fedmeta's Flower ServerApp and strategies."""
