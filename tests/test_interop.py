"""geomsae export / import: the written files against the SAELens (v6) and sparsify formats, the
formats' own inference (re-implemented here in float64 from their documented formulas) against
geomsae's on raw activations, the round trip, and the errors. SAELens itself is not needed:
tests/test_interop_saelens.py loads the files with it where it is installed."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from safetensors.numpy import load_file, save_file

from geomsae.checkpoint import load_sae, read_cfg, save_sae
from geomsae.cli import main
from geomsae.interop import (
    ExportConfig,
    ImportConfig,
    export_sae,
    import_sae,
    read_foreign,
)
from geomsae.saes import ARCHS, fold_input_scale, make

D_IN, D_SAE, S = 12, 40, 2.5
SAELENS_ARCH = {"relu_l1": "standard", "en": "standard", "adaptive_lasso": "standard", "aen": "standard",
                "topk": "topk", "jumprelu": "jumprelu", "batchtopk": "jumprelu", "gated": "gated"}
SAELENS_KEYS = {"standard": {"W_enc", "b_enc", "W_dec", "b_dec"}, "topk": {"W_enc", "b_enc", "W_dec", "b_dec"},
                "jumprelu": {"W_enc", "b_enc", "W_dec", "b_dec", "threshold"},
                "gated": {"W_enc", "b_gate", "b_mag", "r_mag", "W_dec", "b_dec"}}


def trained_like(arch: str, seed: int = 0, input_norm: str = "none", scale: float = S):
    """An SAE with non-trivial weights, biases, thresholds and state, trained-on-s·x style (scale folded)."""
    torch.manual_seed(seed)
    kw = {"k": 5} if arch in ("topk", "batchtopk") else {}
    sae = make(arch, D_IN, D_SAE, input_norm=input_norm, **kw)
    with torch.no_grad():
        for p in sae.parameters():
            p.add_(0.2 * torch.randn_like(p))
        sae.b_enc.add_(0.05)
        if arch == "jumprelu":
            sae.log_threshold.copy_(torch.empty(D_SAE).uniform_(-3.0, -0.5))
        if arch == "batchtopk":
            sae.threshold.fill_(0.15)
        if arch in ("aen", "adaptive_lasso"):
            sae.ema.uniform_(0.01, 1.0)
            sae.step.fill_(5000)
        sae.tokens_since_fired.random_(0, 1000)
    sae.normalize_decoder_()
    if scale != 1.0:
        fold_input_scale(sae, scale)
    return sae.eval()


def raw_x(n: int = 64, seed: int = 1) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, D_IN, generator=g) * 3.0 + 0.5  # raw activations, not of unit scale


def saelens_forward(folder, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(codes, x̂) of a SAELens v6 folder, from its documented inference (float64)."""
    cfg = json.loads((folder / "cfg.json").read_text())
    w = {k: v.astype(np.float64) for k, v in load_file(str(folder / "sae_weights.safetensors")).items()}
    x = x.astype(np.float64)
    coeff = np.sqrt(cfg["d_in"]) / np.linalg.norm(x, axis=1, keepdims=True) \
        if cfg["normalize_activations"] == "constant_norm_rescale" else np.ones((len(x), 1))
    xin = x * coeff - w["b_dec"] * cfg["apply_b_dec_to_input"]
    arch = cfg["architecture"]
    if arch == "gated":
        gate = (xin @ w["W_enc"] + w["b_gate"]) > 0
        z = gate * np.maximum(xin @ (w["W_enc"] * np.exp(w["r_mag"])) + w["b_mag"], 0)
    else:
        pre = xin @ w["W_enc"] + w["b_enc"]
        if arch == "standard":
            z = np.maximum(pre, 0)
        elif arch == "jumprelu":
            z = np.maximum(pre, 0) * (pre > w["threshold"])
        else:
            assert arch == "topk" and not cfg["rescale_acts_by_decoder_norm"]
            idx = np.argsort(-pre, axis=1)[:, : cfg["k"]]
            z = np.zeros_like(pre)
            np.put_along_axis(z, idx, np.maximum(np.take_along_axis(pre, idx, 1), 0), 1)
    return z, (z @ w["W_dec"] + w["b_dec"]) / coeff


def sparsify_forward(folder, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(codes, x̂) of a sparsify folder: TopK of ReLU(encoder(x − b_dec)), decoded by W_dec rows (float64)."""
    cfg = json.loads((folder / "cfg.json").read_text())
    w = {k: v.astype(np.float64) for k, v in load_file(str(folder / "sae.safetensors")).items()}
    pre = np.maximum((x.astype(np.float64) - w["b_dec"]) @ w["encoder.weight"].T + w["encoder.bias"], 0)
    idx = np.argsort(-pre, axis=1)[:, : cfg["k"]]
    z = np.zeros_like(pre)
    np.put_along_axis(z, idx, np.take_along_axis(pre, idx, 1), 1)
    return z, z @ w["W_dec"] + w["b_dec"]


@pytest.mark.parametrize("arch", sorted(ARCHS))
def test_saelens_files_follow_the_format(arch, tmp_path):
    sae = trained_like(arch)
    out = export_sae(sae, tmp_path / "e")
    cfg = json.loads((out / "cfg.json").read_text())
    sl = SAELENS_ARCH[arch]
    assert cfg["architecture"] == sl and cfg["d_in"] == D_IN and cfg["d_sae"] == D_SAE
    assert (cfg["dtype"], cfg["device"], cfg["apply_b_dec_to_input"]) == ("float32", "cpu", True)
    assert (cfg["normalize_activations"], cfg["reshape_activations"]) == ("none", "none")
    assert int(cfg["metadata"]["sae_lens_version"].split(".")[0]) >= 6  # else SAELens reads it as a pre-6 config
    if sl == "topk":
        assert cfg["k"] == 5 and cfg["rescale_acts_by_decoder_norm"] is False
    w = load_file(str(out / "sae_weights.safetensors"))
    assert set(w) == SAELENS_KEYS[sl]
    assert w["W_enc"].shape == (D_IN, D_SAE) and w["W_dec"].shape == (D_SAE, D_IN) and w["b_dec"].shape == (D_IN,)
    assert all(v.dtype == np.float32 for v in w.values())
    assert all(v.shape == (D_SAE,) for k, v in w.items() if k not in ("W_enc", "W_dec", "b_dec"))
    if ARCHS[arch].unit_norm_decoder:  # the input scale folded back out of the decoder: unit-norm atoms
        np.testing.assert_allclose(np.linalg.norm(w["W_dec"], axis=1), 1.0, rtol=1e-5)


@pytest.mark.parametrize("arch", sorted(ARCHS))
def test_saelens_inference_equals_geomsae_on_raw_activations(arch, tmp_path):
    sae = trained_like(arch)
    x = raw_x()
    with torch.no_grad():
        ref = sae(x)
    z, x_hat = saelens_forward(export_sae(sae, tmp_path / "e"), x.numpy())
    assert (ref.codes > 0).any() and (ref.codes == 0).any()  # neither trivially dense nor empty
    np.testing.assert_allclose(x_hat, ref.x_hat.double().numpy(), atol=2e-5, rtol=1e-5)
    np.testing.assert_allclose(z, ref.codes.double().numpy() / S, atol=2e-6, rtol=1e-5)  # codes in raw units


def test_saelens_per_token_norm_is_constant_norm_rescale(tmp_path):
    sae = trained_like("aen", input_norm="per_token", scale=1.0)
    out = export_sae(sae, tmp_path / "e")
    assert json.loads((out / "cfg.json").read_text())["normalize_activations"] == "constant_norm_rescale"
    x = raw_x()
    with torch.no_grad():
        ref = sae(x).x_hat.double().numpy()
    np.testing.assert_allclose(saelens_forward(out, x.numpy())[1], ref, atol=2e-5, rtol=1e-5)


def test_sparsify_files_follow_the_format_and_compute_the_same(tmp_path):
    sae = trained_like("topk")
    out = export_sae(sae, tmp_path / "e", ExportConfig(format="sparsify"))
    cfg = json.loads((out / "cfg.json").read_text())
    assert {k: cfg[k] for k in ("activation", "num_latents", "k", "d_in", "multi_topk", "skip_connection",
                                "transcode", "normalize_decoder")} == {
        "activation": "topk", "num_latents": D_SAE, "k": 5, "d_in": D_IN, "multi_topk": False,
        "skip_connection": False, "transcode": False, "normalize_decoder": True}
    w = load_file(str(out / "sae.safetensors"))
    assert {k: v.shape for k, v in w.items()} == {"encoder.weight": (D_SAE, D_IN), "encoder.bias": (D_SAE,),
                                                  "W_dec": (D_SAE, D_IN), "b_dec": (D_IN,)}
    assert all(v.dtype == np.float32 for v in w.values())
    np.testing.assert_allclose(np.linalg.norm(w["W_dec"], axis=1), 1.0, rtol=1e-5)
    x = raw_x()
    with torch.no_grad():
        ref = sae(x)
    z, x_hat = sparsify_forward(out, x.numpy())
    np.testing.assert_allclose(x_hat, ref.x_hat.double().numpy(), atol=2e-5, rtol=1e-5)
    np.testing.assert_allclose(z, ref.codes.double().numpy() / S, atol=2e-6, rtol=1e-5)


@pytest.mark.parametrize("fmt,arch", [("saelens", a) for a in sorted(ARCHS)] + [("sparsify", "topk")])
def test_round_trip_gives_back_the_same_sae(fmt, arch, tmp_path):
    sae = trained_like(arch)
    back_dir = import_sae(export_sae(sae, tmp_path / "e", ExportConfig(format=fmt)), tmp_path / "back")
    back = load_sae(back_dir).eval()
    assert back.arch == arch and back.cfg == sae.cfg
    assert float(back.input_scale) == pytest.approx(S)
    x = raw_x()
    with torch.no_grad():
        a, b = sae(x), back(x)
    torch.testing.assert_close(b.codes, a.codes, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(b.x_hat, a.x_hat, atol=1e-5, rtol=1e-5)
    for name in ("step", "tokens_since_fired", *(["ema"] if hasattr(sae, "ema") else [])):
        assert torch.equal(getattr(back, name), getattr(sae, name))
    pa, pb = sae.canonical_penalty(), back.canonical_penalty()  # what geomsae compare solves
    assert (pb.lam1, pb.lam2, pb.exact) == pytest.approx((pa.lam1, pa.lam2, pa.exact), rel=1e-6)
    if pa.weights is not None:
        torch.testing.assert_close(pb.weights, pa.weights, rtol=1e-5, atol=1e-6)
    assert read_cfg(back_dir)["imported_from"]["exported_by_geomsae"] is True


def test_export_of_a_training_checkpoint_folds_its_pending_scale(tmp_path):
    sae = trained_like("topk", scale=1.0)  # training space: takes s·x
    save_sae(sae, tmp_path / "ckpt", extra={"pending_input_scale": S})
    x = raw_x()
    with torch.no_grad():
        ref = sae(x * S).x_hat / S  # the raw-space reconstruction of the SAE trained on s·x
    _, x_hat = saelens_forward(export_sae(tmp_path / "ckpt", tmp_path / "e"), x.numpy())
    np.testing.assert_allclose(x_hat, ref.double().numpy(), atol=2e-5, rtol=1e-5)


# ----------------------------------------------------------------- folders written elsewhere
def _write_saelens(folder, arch, w, **cfg):
    folder.mkdir()
    save_file({k: np.ascontiguousarray(v, dtype=np.float32) for k, v in w.items()}, str(folder / "sae_weights.safetensors"))
    doc = {"architecture": arch, "d_in": D_IN, "d_sae": D_SAE, "dtype": "float32", "device": "cpu",
           "apply_b_dec_to_input": True, "normalize_activations": "none", "reshape_activations": "none",
           "metadata": {"sae_lens_version": "6.5.1", "hook_name": "blocks.3.hook_resid_post"}, **cfg}
    (folder / "cfg.json").write_text(json.dumps(doc))
    return folder


def _foreign_weights(arch, rng):
    w = {"W_enc": rng.standard_normal((D_IN, D_SAE)) * 0.3, "W_dec": rng.standard_normal((D_SAE, D_IN)) * 0.4,
         "b_dec": rng.standard_normal(D_IN) * 0.2}
    if arch == "gated":
        w.update(b_gate=rng.standard_normal(D_SAE) * 0.2, b_mag=rng.standard_normal(D_SAE) * 0.2,
                 r_mag=rng.standard_normal(D_SAE) * 0.3)
    else:
        w["b_enc"] = rng.standard_normal(D_SAE) * 0.2
    if arch == "jumprelu":
        w["threshold"] = rng.uniform(-0.2, 0.6, D_SAE)  # some ≤ 0: plain ReLU there
    return w


def _reference(folder, x, w, cfg):
    """SAELens inference including the options geomsae folds on import (b_dec not subtracted;
    TopK ranked by pre-activations times decoder norms)."""
    arch = cfg["architecture"]
    xin = x - w["b_dec"] * cfg.get("apply_b_dec_to_input", True)
    if arch == "topk":
        n = np.linalg.norm(w["W_dec"], axis=1) if cfg.get("rescale_acts_by_decoder_norm") else np.ones(D_SAE)
        pre = (xin @ w["W_enc"] + w["b_enc"]) * n
        idx = np.argsort(-pre, axis=1)[:, : cfg["k"]]
        z = np.zeros_like(pre)
        np.put_along_axis(z, idx, np.maximum(np.take_along_axis(pre, idx, 1), 0), 1)
        return z, (z / n) @ w["W_dec"] + w["b_dec"]
    if arch == "gated":
        z = ((xin @ w["W_enc"] + w["b_gate"]) > 0) * np.maximum(xin @ (w["W_enc"] * np.exp(w["r_mag"])) + w["b_mag"], 0)
    else:
        pre = xin @ w["W_enc"] + w["b_enc"]
        z = np.maximum(pre, 0) * (pre > w["threshold"] if arch == "jumprelu" else 1)
    return z, z @ w["W_dec"] + w["b_dec"]


@pytest.mark.parametrize("arch,extra,geomsae_arch", [
    ("standard", {}, "relu_l1"), ("standard", {"apply_b_dec_to_input": False}, "relu_l1"),
    ("topk", {"k": 6, "rescale_acts_by_decoder_norm": False}, "topk"),
    ("topk", {"k": 6, "rescale_acts_by_decoder_norm": True}, "topk"),
    ("jumprelu", {}, "jumprelu"), ("gated", {"apply_b_dec_to_input": False}, "gated")])
def test_import_of_a_saelens_folder_written_elsewhere(arch, extra, geomsae_arch, tmp_path):
    rng = np.random.default_rng(3)
    w = _foreign_weights(arch, rng)
    folder = _write_saelens(tmp_path / "sl", arch, w, **extra)
    sae = load_sae(import_sae(folder, tmp_path / "g")).eval()
    assert sae.arch == geomsae_arch and float(sae.input_scale) == 1.0
    x = rng.standard_normal((64, D_IN)) * 2
    z_ref, x_ref = _reference(folder, x, {k: np.float32(v).astype(np.float64) for k, v in w.items()},
                              {"architecture": arch, **extra})
    with torch.no_grad():
        out = sae(torch.tensor(x, dtype=torch.float32))
    assert (z_ref > 0).any() and (z_ref == 0).any()
    np.testing.assert_allclose(out.codes.double().numpy(), z_ref, atol=1e-5, rtol=1e-4)
    np.testing.assert_allclose(out.x_hat.double().numpy(), x_ref, atol=1e-5, rtol=1e-4)
    info = read_cfg(tmp_path / "g")["imported_from"]
    assert info["format"] == "saelens" and info["penalty_known"] == (geomsae_arch == "topk")


def test_import_of_a_sparsify_folder_written_elsewhere(tmp_path):
    rng = np.random.default_rng(4)
    folder = tmp_path / "layers.6"
    folder.mkdir()
    w = {"encoder.weight": rng.standard_normal((D_SAE, D_IN)), "encoder.bias": rng.standard_normal(D_SAE) * 0.1,
         "W_dec": rng.standard_normal((D_SAE, D_IN)), "b_dec": rng.standard_normal(D_IN) * 0.1}
    save_file({k: v.astype(np.float32) for k, v in w.items()}, str(folder / "sae.safetensors"))
    (folder / "cfg.json").write_text(json.dumps({"activation": "topk", "expansion_factor": 32, "normalize_decoder": True,
                                                 "num_latents": D_SAE, "k": 7, "multi_topk": False,
                                                 "skip_connection": False, "transcode": False, "d_in": D_IN}))
    sae = load_sae(import_sae(folder, tmp_path / "g")).eval()
    assert sae.arch == "topk" and sae.cfg.k == 7
    x = rng.standard_normal((64, D_IN)).astype(np.float32)
    z_ref, x_ref = sparsify_forward(folder, x)
    with torch.no_grad():
        out = sae(torch.tensor(x))
    np.testing.assert_allclose(out.codes.double().numpy(), z_ref, atol=1e-5, rtol=1e-4)
    np.testing.assert_allclose(out.x_hat.double().numpy(), x_ref, atol=1e-5, rtol=1e-4)


def test_l1_coefficient_becomes_relu_l1_lam(tmp_path):
    folder = _write_saelens(tmp_path / "sl", "standard", _foreign_weights("standard", np.random.default_rng(5)))
    sae, info = read_foreign(folder, ImportConfig(l1_coefficient=6.0))
    assert sae.cfg.lam == pytest.approx(6.0 / D_IN) and info["penalty_known"] is True
    with pytest.raises(ValueError, match="l1_coefficient is for SAELens 'standard'"):
        read_foreign(_write_saelens(tmp_path / "t", "topk", _foreign_weights("topk", np.random.default_rng(5)), k=3),
                     ImportConfig(l1_coefficient=1.0))


# ----------------------------------------------------------------- errors
@pytest.mark.parametrize("arch", sorted(set(ARCHS) - {"topk"}))
def test_sparsify_refuses_what_it_cannot_hold(arch, tmp_path):
    with pytest.raises(ValueError, match=rf"arch '{arch}' cannot be exported to sparsify.*'topk'"):
        export_sae(trained_like(arch), tmp_path / "e", ExportConfig(format="sparsify"))
    assert not (tmp_path / "e").exists()


def test_sparsify_refuses_per_token_norm(tmp_path):
    with pytest.raises(ValueError, match="per_token.*sparsify"):
        export_sae(trained_like("topk", input_norm="per_token", scale=1.0), tmp_path / "e", ExportConfig("sparsify"))


@pytest.mark.parametrize("change,match", [
    ({"architecture": "transcoder"}, r"architecture == 'transcoder'; geomsae imports \['gated', 'jumprelu', 'standard', 'topk'\]"),
    ({"normalize_activations": "layer_norm"}, "normalize_activations == 'layer_norm'"),
    ({"reshape_activations": "hook_z"}, "reshape_activations == 'hook_z'"),
    ({"metadata": {"sae_lens_version": "5.9.0"}}, "sae_lens_version == '5.9.0'"),
    ({"d_sae": 41}, r"tensor 'W_enc' has shape \(12, 40\), must be \(12, 41\)"),
])
def test_unsupported_saelens_folders_are_named(change, match, tmp_path):
    folder = _write_saelens(tmp_path / "sl", "standard", _foreign_weights("standard", np.random.default_rng(0)), **change)
    with pytest.raises(ValueError, match=match):
        import_sae(folder, tmp_path / "g")
    assert not (tmp_path / "g").exists()


def test_unexpected_tensor_and_escaping_state_file_are_refused(tmp_path):
    w = _foreign_weights("standard", np.random.default_rng(0))
    folder = _write_saelens(tmp_path / "sl", "standard", {**w, "scaling_factor": np.full(D_SAE, 2.0)})
    with pytest.raises(ValueError, match=r"unexpected \['scaling_factor'\]"):
        import_sae(folder, tmp_path / "g")
    out = export_sae(trained_like("aen"), tmp_path / "e")
    doc = json.loads((out / "cfg.json").read_text())
    doc["metadata"]["geomsae"]["state_file"] = "../elsewhere.safetensors"
    (out / "cfg.json").write_text(json.dumps(doc))
    with pytest.raises(ValueError, match="state_file == '../elsewhere.safetensors'"):
        import_sae(out, tmp_path / "g2")


def test_nothing_is_overwritten(tmp_path):
    sae = trained_like("topk")
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "keep.txt").write_text("x")
    with pytest.raises(ValueError, match="is a folder that is not empty"):
        export_sae(sae, tmp_path / "full")
    (tmp_path / "f").write_text("x")
    with pytest.raises(ValueError, match="is a file"):
        export_sae(sae, tmp_path / "f")
    with pytest.raises(ValueError, match="neither a SAELens folder.*nor a sparsify folder"):
        save_sae(sae, tmp_path / "native")
        import_sae(tmp_path / "native", tmp_path / "g")


# ----------------------------------------------------------------- command line
def test_cli_export_import_eval_compare(tmp_path, capsys):
    x = raw_x(600).numpy()
    np.save(tmp_path / "x.npy", x)
    for parent in ("a", "b"):  # two runs named alike: the report must tell them apart
        save_sae(trained_like("aen", seed=ord(parent)), tmp_path / parent / "run")
    assert main(["export", str(tmp_path / "a" / "run"), "--format", "saelens", "--out", str(tmp_path / "e")]) == 0
    assert "wrote" in capsys.readouterr().out
    assert main(["export", str(tmp_path / "a" / "run"), "--out", str(tmp_path / "e")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "is a folder that is not empty" in err
    assert main(["export", str(tmp_path / "a" / "run"), "--format", "sparsify", "--out", str(tmp_path / "s")]) == 2
    assert "cannot be exported to sparsify" in capsys.readouterr().err
    assert main(["import", str(tmp_path / "e"), "--out", str(tmp_path / "c" / "run")]) == 0
    assert main(["eval", str(tmp_path / "c" / "run"), "--data", str(tmp_path / "x.npy"), "--json"]) == 0
    capsys.readouterr()
    assert main(["compare", str(tmp_path / "a" / "run"), str(tmp_path / "b" / "run"), str(tmp_path / "c" / "run"),
                 "--data", str(tmp_path / "x.npy"), "--n-tokens", "40", "--held-out", "1.0", "--lipschitz-tokens", "2",
                 "--calibrate-iters", "4", "--out", str(tmp_path / "cmp")]) == 0
    names = [r["name"] for r in json.loads((tmp_path / "cmp" / "report.json").read_text())["runs"]]
    assert names == ["a/run", "b/run", "c/run"]
    # the imported copy of a/run is the same SAE: the same exact problem and the same gaps
    runs = json.loads((tmp_path / "cmp" / "report.json").read_text())["runs"]
    assert runs[2]["penalty"]["lam1"] == pytest.approx(runs[0]["penalty"]["lam1"], rel=1e-6)
    assert runs[2]["summary"]["objective_gap"]["median"] == pytest.approx(runs[0]["summary"]["objective_gap"]["median"],
                                                                           rel=1e-3, abs=1e-7)


def test_cli_compare_calibrates_an_imported_sae_without_its_penalty(tmp_path, capsys):
    rng = np.random.default_rng(6)
    folder = _write_saelens(tmp_path / "sl", "standard", _foreign_weights("standard", rng))
    np.save(tmp_path / "x.npy", (rng.standard_normal((300, D_IN)) * 2).astype(np.float32))
    assert main(["import", str(folder), "--out", str(tmp_path / "g")]) == 0
    assert "penalty unknown" in capsys.readouterr().out
    assert main(["compare", str(tmp_path / "g"), "--data", str(tmp_path / "x.npy"), "--n-tokens", "40",
                 "--held-out", "1.0", "--lipschitz-tokens", "2", "--calibrate-iters", "4"]) == 0
    assert "imported without its l1 coefficient" in capsys.readouterr().out
    rep = json.loads((tmp_path / "g" / "compare" / "report.json").read_text())
    assert rep["penalty"]["calibrated"] is True and rep["penalty"]["lam1"] > 0


def test_cli_import_errors_are_one_line(tmp_path, capsys):
    assert main(["import", str(tmp_path / "missing"), "--out", str(tmp_path / "g")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "does not exist" in err
    assert main(["import", str(tmp_path), "--out", str(tmp_path / "g"), "--l1-coefficient", "-1"]) == 2
    assert "l1_coefficient == -1.0" in capsys.readouterr().err


@pytest.mark.parametrize("arch,known", [("aen", False), ("relu_l1", True)])
def test_export_resaved_without_its_sidecar_still_imports(arch, known, tmp_path):
    """SAELens's save_model keeps cfg.json's metadata but not geomsae_state.safetensors: the SAE still
    comes back; only an adaptive SAE loses its EMA, and then its penalty counts as unknown."""
    sae = trained_like(arch)
    out = export_sae(sae, tmp_path / "e")
    (out / "geomsae_state.safetensors").unlink()
    back, info = read_foreign(out)
    assert info["state_restored"] is False and info["penalty_known"] is known
    x = raw_x()
    with torch.no_grad():
        torch.testing.assert_close(back(x).x_hat, sae(x).x_hat, atol=1e-5, rtol=1e-5)
    assert int(back.step) == 0


def test_run_labels_tell_apart_folders_of_the_same_name(tmp_path):
    from geomsae.compare_report import run_labels

    assert run_labels([tmp_path / "x" / "a" / "run", tmp_path / "x" / "b" / "run", tmp_path / "solo"]) == \
        ["a/run", "b/run", "solo"]
    assert run_labels([tmp_path / "p" / "q" / "run", tmp_path / "r" / "q" / "run"]) == ["p/q/run", "r/q/run"]
    assert run_labels([tmp_path / "run", tmp_path / "run" / ".." / "run"]) == ["run", "run#2"]


def test_bfloat16_saelens_folder_imports_as_float32(tmp_path):
    from safetensors.torch import save_file as save_torch

    w = _foreign_weights("jumprelu", np.random.default_rng(7))
    folder = _write_saelens(tmp_path / "sl", "jumprelu", w, dtype="bfloat16")
    save_torch({k: torch.tensor(v).to(torch.bfloat16) for k, v in w.items()}, str(folder / "sae_weights.safetensors"))
    sae = load_sae(import_sae(folder, tmp_path / "g")).eval()
    assert sae.W_enc.dtype == torch.float32
    wb = {k: torch.tensor(v).to(torch.bfloat16).double().numpy() for k, v in w.items()}
    x = np.random.default_rng(8).standard_normal((32, D_IN))
    z_ref, x_ref = _reference(folder, x, wb, {"architecture": "jumprelu"})
    with torch.no_grad():
        out = sae(torch.tensor(x, dtype=torch.float32))
    np.testing.assert_allclose(out.x_hat.double().numpy(), x_ref, atol=1e-5, rtol=1e-4)
