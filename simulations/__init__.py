"""Experiment presets (configs/*.toml) and the simulation launcher used by ``fedmeta run``."""
