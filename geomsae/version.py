"""The package version (pyproject.toml's), recorded in every saved SAE's cfg.json."""

__version__ = "0.1.0"
