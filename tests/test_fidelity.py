"""LM fidelity: splicing SAEs into tiny random GPT-NeoX and Llama models."""

from __future__ import annotations

import math

import pytest
import torch

from tests.tiny_lm import ARCHS, text_ids, trained_tiny_model

from geomsae import lm  # noqa: E402
from geomsae.fidelity import lm_fidelity, mean_hidden  # noqa: E402
from geomsae.saes import make  # noqa: E402
from geomsae.saes.base import fold_input_scale  # noqa: E402


@pytest.fixture(scope="module", params=ARCHS)
def model(request):
    return trained_tiny_model(request.param)


def identity_sae(d: int, input_norm: str = "none"):
    """relu_l1 with W_enc = [I; −I], W_dec = [I, −I]: x̂ = ReLU(x) − ReLU(−x) = x exactly."""
    sae = make("relu_l1", d, 2 * d, input_norm=input_norm)
    eye = torch.eye(d)
    with torch.no_grad():
        sae.W_enc.copy_(torch.cat([eye, -eye]))
        sae.W_dec.copy_(torch.cat([eye, -eye], dim=1))
        sae.b_enc.zero_()
        sae.b_dec.zero_()
    return sae


def _ids(n=6, t=24):
    return text_ids(n, t, offset=7)


@pytest.mark.parametrize("variant", ["plain", "per_token", "folded_scale"])
def test_identity_sae_recovers_all_of_the_loss(model, variant):
    d = model.config.hidden_size
    sae = identity_sae(d, "per_token" if variant == "per_token" else "none")
    if variant == "folded_scale":
        fold_input_scale(sae, 0.05)  # trained on 0.05·x; takes raw x after folding
    res = lm_fidelity(model, sae, _ids(), layer=1, batch_contexts=4)
    assert res["ce_recovered_zero"] == pytest.approx(1.0, abs=1e-5)
    assert res["ce_recovered_mean"] == pytest.approx(1.0, abs=1e-5)
    assert res["kl_patched"] == pytest.approx(0.0, abs=1e-6)
    assert res["ce_zero"] > res["ce_clean"] and res["n_positions"] == 6 * 23


def test_a_normalised_sae_whose_scale_is_not_undone_loses_loss(model):
    """The check can fail: feed the per-token-normalised reconstruction back without undoing it."""
    d = model.config.hidden_size
    sae = identity_sae(d, "per_token")

    class NoUndo(torch.nn.Module):
        def __init__(self, inner):
            super().__init__()
            self.inner, self.b_dec = inner, inner.b_dec

        def forward(self, x):
            return type(self.inner(x))(self.inner.decode(self.inner.encode(x)), None, None)

    res = lm_fidelity(model, NoUndo(sae), _ids(), layer=1, batch_contexts=4)
    # pre-norm blocks are nearly scale invariant, so CE may barely move; the logits do
    assert res["kl_patched"] > 1e-3 and abs(res["ce_patched"] - res["ce_clean"]) > 1e-4


def test_zero_sae_equals_zero_ablation_and_values_recomputed(model):
    d = model.config.hidden_size
    sae = make("relu_l1", d, 8)
    with torch.no_grad():
        sae.W_enc.zero_(); sae.b_enc.fill_(-1.0); sae.b_dec.zero_()  # noqa: E702 (codes 0, x̂ = 0)
    ids = _ids()
    res = lm_fidelity(model, sae, ids, layer=2, batch_contexts=5)
    assert res["ce_recovered_zero"] == pytest.approx(0.0, abs=1e-6)
    assert res["ce_patched"] == pytest.approx(res["ce_zero"], rel=1e-6)
    # independent recomputation of the clean and the zero-ablated loss, BOS position kept clean
    logits = model(input_ids=ids).logits[:, :-1]
    ce = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), ids[:, 1:].reshape(-1))
    assert res["ce_clean"] == pytest.approx(float(ce), rel=1e-5)

    def zero_after_bos(h):
        h = h.clone()
        h[:, 1:] = 0
        return h

    with lm.patched(model, 2, "resid_post", zero_after_bos):
        logits = model(input_ids=ids).logits[:, :-1]
    ce0 = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), ids[:, 1:].reshape(-1))
    assert res["ce_zero"] == pytest.approx(float(ce0), rel=1e-5)
    mean = mean_hidden(model, ids, 2)
    h = lm.capture(model, ids, 2)[:, 1:]
    torch.testing.assert_close(mean, h.reshape(-1, d).mean(0))


def test_cached_ablations_give_the_same_numbers(model):
    sae = identity_sae(model.config.hidden_size)
    with torch.no_grad():
        sae.W_dec.mul_(0.9)  # a lossy SAE
    ids = _ids()
    full = lm_fidelity(model, sae, ids, layer=0)
    again = lm_fidelity(model, sae, ids, layer=0, ablations={"ce_zero": full["ce_zero"], "ce_mean": full["ce_mean"]})
    for k in ("ce_patched", "ce_recovered_zero", "ce_recovered_mean", "kl_patched"):
        assert again[k] == pytest.approx(full[k], rel=1e-9)
    assert 0 < full["ce_recovered_zero"] < 1 and full["kl_patched"] > 0
    assert not math.isnan(full["ce_recovered_mean"])


def test_bad_inputs(model):
    sae = identity_sae(model.config.hidden_size)
    with pytest.raises(ValueError, match=r"contexts must be a \(N, T\) tensor of token ids with T >= 2"):
        lm_fidelity(model, sae, torch.zeros(4, 1, dtype=torch.long), layer=0)
    with pytest.raises(ValueError, match=r"batch_contexts == 0, must be an integer >= 1"):
        lm_fidelity(model, sae, _ids(), layer=0, batch_contexts=0)
    with pytest.raises(ValueError, match=r"layer == 9, must be in \[0, 2\]"):
        lm_fidelity(model, sae, _ids(), layer=9)
