"""The layout rules, checked on the sources with ast (nothing is imported):

- the library ``geomsae/`` imports no experiment folder;
- ``llm_eval/`` does not import ``synthetic`` at all (they share machinery through geomsae.study);
- no module imports another top-level folder's private (underscore) name;
- the retired modules (synthetic.arms, synthetic.sweep) stay gone.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
LIBRARY = "geomsae"
EXPERIMENTS = ("synthetic", "llm_eval", "proofs_check", "figures")


def _modules(folder: str) -> list[Path]:
    return sorted((ROOT / folder).rglob("*.py"))


def _module_name(path: Path, root: Path = ROOT) -> str:
    parts = path.relative_to(root).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports(path: Path, root: Path = ROOT) -> list[tuple[str, list[str], int]]:
    """(module imported, names taken from it, line) for every import in the file, nested ones included;
    relative imports resolved against the file's package."""
    tree = ast.parse(path.read_text(), filename=str(path))
    pkg = _module_name(path, root).split(".")
    if path.name != "__init__.py":
        pkg = pkg[:-1]
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out += [(a.name, [], node.lineno) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(pkg[: len(pkg) - node.level + 1] + ([base] if base else []))
            out.append((base, [a.name for a in node.names], node.lineno))
    return out


def _private(name: str) -> bool:
    return any(p.startswith("_") and not (p.startswith("__") and p.endswith("__")) for p in name.split("."))


def test_imports_parser_sees_nested_and_relative_imports(tmp_path):
    f = tmp_path / "pkg" / "sub" / "m.py"
    f.parent.mkdir(parents=True)
    f.write_text("import os.path\nfrom ..x import _y\ndef g():\n    from synthetic.plots import _plt, FIGURES\n")
    assert imports(f, tmp_path) == [("os.path", [], 1), ("pkg.x", ["_y"], 2), ("synthetic.plots", ["_plt", "FIGURES"], 4)]
    assert _private("synthetic.plots._plt") and _private("a._b.c") and not _private("x.__init__")


@pytest.mark.parametrize("path", _modules(LIBRARY), ids=lambda p: str(p.relative_to(ROOT)))
def test_library_imports_no_experiment_folder(path):
    bad = [(m, line) for m, _, line in imports(path) if m.split(".")[0] in EXPERIMENTS]
    assert not bad, f"{path.relative_to(ROOT)} imports experiment folders: {bad}"


@pytest.mark.parametrize("path", _modules("llm_eval"), ids=lambda p: str(p.relative_to(ROOT)))
def test_llm_eval_does_not_import_synthetic(path):
    bad = [(m, line) for m, _, line in imports(path) if m.split(".")[0] == "synthetic"]
    assert not bad, f"{path.relative_to(ROOT)} imports synthetic: {bad}"


@pytest.mark.parametrize("path", [p for f in (LIBRARY, *EXPERIMENTS) for p in _modules(f)],
                         ids=lambda p: str(p.relative_to(ROOT)))
def test_no_private_name_from_another_folder(path):
    top = path.relative_to(ROOT).parts[0]
    bad = []
    for mod, names, line in imports(path):
        if mod.split(".")[0] in (LIBRARY, *EXPERIMENTS) and mod.split(".")[0] != top:
            bad += [(f"{mod}.{n}" if n else mod, line) for n in (names or [""]) if _private(f"{mod}.{n}" if n else mod)]
    assert not bad, f"{path.relative_to(ROOT)} imports private names of another folder: {bad}"


def test_retired_modules_are_gone():
    for name in ("synthetic/arms.py", "synthetic/sweep.py"):
        assert not (ROOT / name).exists(), name
    assert (ROOT / "geomsae" / "study" / "__init__.py").is_file()
