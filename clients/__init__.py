"""fedmeta's Flower ClientApp (one client = one task)."""
