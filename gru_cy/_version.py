"""The package version (one place: gru_cy/__init__ and the checkpoints read it)."""
__version__ = "0.1.0"
