"""SAE folders: save → load round trips, plain JSON configs, clear errors on damage."""

from __future__ import annotations

import json

import pytest
import torch

import geomsae
from geomsae.checkpoint import load_sae, save_sae
from geomsae.saes import ARCHS, make


pytestmark = pytest.mark.usefixtures("one_thread")  # tiny matrices: one thread (conftest)


SMALL = {"topk": dict(k=4), "batchtopk": dict(k=4), "aen": dict(warmup_steps=1, ramp_steps=2),
         "adaptive_lasso": dict(warmup_steps=1, ramp_steps=2)}


def _exercised(arch: str):
    """An SAE whose buffers have moved away from their initial values."""
    torch.manual_seed(1)
    sae = make(arch, 12, 24, **SMALL.get(arch, {}))
    opt = torch.optim.Adam(sae.parameters(), lr=1e-2)
    for _ in range(4):
        x = torch.randn(64, 12)
        out = sae(x)
        sae.loss(x, out).loss.backward()
        opt.step()
        opt.zero_grad()
        with torch.no_grad():
            sae.on_step_end(x, out)
    return sae


@pytest.mark.parametrize("arch", sorted(ARCHS))
def test_save_load_round_trip(tmp_path, arch):
    sae = _exercised(arch)
    save_sae(sae, tmp_path / "m", extra={"note": "hello", "train": {"lr": 1e-3}})
    doc = json.loads((tmp_path / "m" / "cfg.json").read_text(),
                     parse_constant=lambda c: pytest.fail(f"non-standard JSON constant {c}"))
    assert doc["arch"] == arch and doc["cfg"]["d_sae"] == 24 and doc["note"] == "hello"
    assert doc["geomsae_version"] == geomsae.__version__
    rng = torch.get_rng_state()
    loaded = geomsae.load(tmp_path / "m")
    assert torch.equal(torch.get_rng_state(), rng)  # loading does not disturb the caller's RNG
    assert type(loaded) is type(sae) and loaded.cfg == sae.cfg
    a, b = sae.state_dict(), loaded.state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) and a[k].dtype == b[k].dtype for k in a)
    assert int(loaded.step) == 4  # buffers came along
    x = torch.randn(50, 12)
    with torch.no_grad():
        o1, o2 = sae(x), loaded(x)
    assert torch.equal(o1.codes, o2.codes) and torch.equal(o1.x_hat, o2.x_hat)


def test_damaged_folders_give_clear_errors(tmp_path):
    sae = _exercised("en")
    path = save_sae(sae, tmp_path / "m")
    weights, cfg_path = path / "sae.safetensors", path / "cfg.json"
    good_weights, good_cfg = weights.read_bytes(), cfg_path.read_text()

    with pytest.raises(FileNotFoundError, match="SAE folder .*nope' does not exist"):
        load_sae(tmp_path / "nope")
    raw = bytearray(good_weights)
    raw[-3] ^= 0x55  # one weight changed
    weights.write_bytes(bytes(raw))
    with pytest.raises(ValueError, match="does not match the sha256 in cfg.json"):
        load_sae(path)
    weights.write_bytes(good_weights[:-40])
    with pytest.raises(ValueError, match="not a readable safetensors file"):
        load_sae(path, verify=False)
    weights.unlink()
    with pytest.raises(FileNotFoundError, match="has no sae.safetensors"):
        load_sae(path)
    weights.write_bytes(good_weights)

    def with_cfg(edit) -> None:
        doc = json.loads(good_cfg)
        edit(doc)
        cfg_path.write_text(json.dumps(doc))

    with_cfg(lambda d: d.update(arch="nope"))
    with pytest.raises(ValueError, match="arch == 'nope', must be one of"):
        load_sae(path)
    with_cfg(lambda d: d["cfg"].update(d_sae=30))
    with pytest.raises(ValueError, match=r"tensor 'W_dec' has shape \(12, 24\).*d_sae=30 expects \(12, 30\)"):
        load_sae(path)
    with_cfg(lambda d: d["cfg"].update(lam9=1.0))
    with pytest.raises(ValueError, match=r"unknown config field\(s\) \['lam9'\]"):
        load_sae(path)
    with_cfg(lambda d: d["cfg"].update(lam1=-1.0))
    with pytest.raises(ValueError, match="lam1 == -1.0"):
        load_sae(path)
    cfg_path.write_text("{not json")
    with pytest.raises(ValueError, match="is not valid JSON"):
        load_sae(path)
    cfg_path.unlink()
    with pytest.raises(FileNotFoundError, match="has no cfg.json"):
        load_sae(path)


def test_reserved_extra_keys_are_refused(tmp_path):
    with pytest.raises(ValueError, match=r"extra keys \['arch'\] are reserved"):
        save_sae(_exercised("relu_l1"), tmp_path / "m", extra={"arch": "x"})
