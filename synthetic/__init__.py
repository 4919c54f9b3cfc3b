"""Seeded synthetic datasets with planted dictionaries (docs/method.md §4); see :mod:`synthetic.generators`."""

from synthetic.data import SyntheticData, load_synthetic, save_npy_pair
from synthetic.diagnostics import SpikeDiagnostics, spike_diagnostics
from synthetic.generators import sharkey, spiked, spiked_dictionary, zipf_hierarchy

__all__ = [
    "SyntheticData", "spiked", "spiked_dictionary", "sharkey", "zipf_hierarchy",
    "spike_diagnostics", "SpikeDiagnostics", "save_npy_pair", "load_synthetic",
]
