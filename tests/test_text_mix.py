"""geomsae.text: mixing two text sources ('A+B')."""

from __future__ import annotations

import pytest

from geomsae import text


def test_mix_is_even_in_characters_then_drains(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir(), b.mkdir()
    for i in range(3):
        (a / f"{i}.txt").write_text("x" * 100)
    for i in range(6):
        (b / f"{i}.txt").write_text("y" * 30)
    docs = list(text.documents(f"{a}+{b}"))
    assert [d.id for d in docs] == ["0/0.txt", "1/0.txt", "1/1.txt", "1/2.txt", "1/3.txt", "0/1.txt",
                                    "1/4.txt", "1/5.txt", "0/2.txt"]
    assert len({d.id for d in docs}) == 9  # the same relative paths, told apart by the source
    with pytest.raises(ValueError, match=r"text == 'python-doc\+': a mix needs a source name"):
        text.documents("python-doc+")
