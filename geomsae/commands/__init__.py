"""Sub-commands of the geomsae CLI (see geomsae.cli)."""
