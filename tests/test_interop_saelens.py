"""The exported folders loaded by SAELens itself (``SAE.load_from_disk``): its reconstructions and
codes match geomsae's on raw activations. Skipped where sae-lens is not installed (it is not a
dependency of geomsae; tests/test_interop.py checks the files against the format without it)."""

from __future__ import annotations

import pytest
import torch

from geomsae.interop import export_sae
from geomsae.saes import ARCHS

sae_lens = pytest.importorskip("sae_lens")

from tests.test_interop import S, raw_x, trained_like


@pytest.mark.parametrize("arch", sorted(ARCHS))
@pytest.mark.parametrize("input_norm", ["none", "per_token"])
def test_saelens_loads_the_export_and_reconstructs_the_same(arch, input_norm, tmp_path):
    sae = trained_like(arch, input_norm=input_norm, scale=S if input_norm == "none" else 1.0)
    out = export_sae(sae, tmp_path / "e")
    loaded = sae_lens.SAE.load_from_disk(str(out), device="cpu")
    x = raw_x()
    with torch.no_grad():
        ref = sae(x)
        z = loaded.encode(x)
        x_hat = loaded.decode(z)
    s = float(sae.input_scale)
    torch.testing.assert_close(x_hat, ref.x_hat, atol=2e-5, rtol=1e-5)
    torch.testing.assert_close(z, ref.codes / s, atol=2e-6, rtol=1e-5)
