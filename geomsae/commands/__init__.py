"""Sub-commands of the geomsae CLI (see geomsae.cli): one module per command, imported when it runs."""

__all__ = ["common", "compare", "evaluate", "export", "harvest", "import_sae", "solve", "train"]
