"""The README's "Try it on synthetic ground truth" block, run verbatim (issue 27 item 4), and the array files the
CLI reads (geomsae.commands.common.read_array): what the project's own generators write, clear errors otherwise."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp

from geomsae.cli import main as geomsae_main
from geomsae.commands.common import read_array
from synthetic.__main__ import main as synthetic_main

ROOT = Path(__file__).resolve().parent.parent


def readme_block(after: str) -> list[str]:
    """The command lines of the first ```bash block after the line containing ``after``."""
    text = (ROOT / "README.md").read_text()
    start = text.index(after)
    block = re.search(r"```bash\n(.*?)```", text[start:], re.S)
    return [ln for ln in block.group(1).splitlines() if ln.strip() and not ln.startswith("#")]


def test_the_readme_synthetic_block_runs_as_written(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    lines = readme_block("Try it on synthetic ground truth")
    assert any("--true-codes" in ln for ln in lines)
    for line in lines:
        argv = shlex.split(line)
        if argv[:3] == ["python", "-m", "synthetic"]:
            rc = synthetic_main(argv[3:])
        else:
            assert argv[0] == "geomsae", line
            rc = geomsae_main(argv[1:] + (["--no-progress"] if argv[1] in ("eval",) else []))
        assert rc == 0, f"{line} -> {rc}: {capsys.readouterr().err[-2000:]}"
    out = capsys.readouterr().out
    assert re.search(r"\bmcc\b", out), out[-2000:]  # the true codes were read and used


def test_read_array_takes_npy_dense_and_sparse_npz(tmp_path):
    z = np.zeros((5, 7), np.float32)
    z[1, 3], z[4, 0] = 2.5, 1.0
    np.save(tmp_path / "z.npy", z)
    sp.save_npz(tmp_path / "z_sparse.npz", sp.csr_array(z))
    np.savez(tmp_path / "z_dense.npz", codes=z)
    for name in ("z.npy", "z_sparse.npz", "z_dense.npz"):
        np.testing.assert_array_equal(read_array(tmp_path / name, "--true-codes"), z)
    np.save(tmp_path / "big_endian.npy", z.astype(">f4"))
    got = read_array(tmp_path / "big_endian.npy", "--true-codes")
    assert got.dtype.isnative and np.array_equal(got, z)


@pytest.mark.parametrize("name,content,match", [
    ("empty.npy", b"", "is empty"),
    ("text.npy", b"1 2 3\n", "not a .npy or .npz"),
    ("weights.safetensors", b"\x08\x00\x00\x00\x00\x00\x00\x00{}      ", "not a .npy or .npz"),
])
def test_read_array_refuses_what_is_not_an_array_file(tmp_path, name, content, match):
    (tmp_path / name).write_bytes(content)
    with pytest.raises(ValueError, match=match):
        read_array(tmp_path / name, "--true-dict")


def test_read_array_never_unpickles_and_refuses_bad_values(tmp_path):
    np.save(tmp_path / "obj.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(ValueError, match="never loaded"):
        read_array(tmp_path / "obj.npy", "--true-dict")
    np.save(tmp_path / "nan.npy", np.array([1.0, np.nan]))
    with pytest.raises(ValueError, match="NaN or Inf"):
        read_array(tmp_path / "nan.npy", "--true-dict")
    np.savez(tmp_path / "two.npz", a=np.ones(2), b=np.ones(2))
    with pytest.raises(ValueError, match="holding one array"):
        read_array(tmp_path / "two.npz", "--true-codes")
    with pytest.raises(ValueError, match="does not exist"):
        read_array(tmp_path / "missing.npy", "--true-codes")
