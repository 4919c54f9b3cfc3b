"""The layout rules, checked on the sources with ast (nothing imported), and the public API:

- the library ``geomsae/`` imports no experiment folder;
- ``llm_eval/`` does not import ``synthetic`` at all (they share machinery through geomsae.study);
- no module imports another module's private (underscore) name, nor a private module of another package;
- no import cycle among the modules, counting the imports inside functions;
- inside the library, a function-local import is for an optional or heavy dependency, or for the CLI's
  start-up (:data:`LOCAL_OK`), never an internal module elsewhere;
- ``from geomsae import *`` gives exactly ``geomsae.__all__``, every package's ``__all__`` resolves, and
  ``import geomsae`` and ``geomsae --help`` do not import torch;
- the retired modules (synthetic.arms, synthetic.sweep) stay gone.
"""

from __future__ import annotations

import ast
import subprocess
import sys
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


ALL_FOLDERS = (LIBRARY, *EXPERIMENTS)
MODULES = {_module_name(p): p for f in ALL_FOLDERS for p in _modules(f)}


def _graph() -> dict[str, set[str]]:
    """module → the project modules it imports (top-level or inside functions); ``from pkg import sub`` is an
    edge to ``pkg.sub`` when that is a module."""
    graph = {}
    for name, path in MODULES.items():
        out = set()
        for mod, names, _ in imports(path):
            subs = [f"{mod}.{n}" for n in names if f"{mod}.{n}" in MODULES]
            out.update(subs)
            if mod in MODULES and (len(subs) < len(names) or not names):
                out.add(mod)
        out.discard(name)
        graph[name] = out
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan, iterative)."""
    index, low, stack, on, found, counter = {}, {}, [], set(), [], [0]
    for root in graph:
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = counter[0]
        counter[0] += 1
        stack.append(root)
        on.add(root)
        while work:
            v, it = work[-1]
            w = next(it, None)
            if w is not None:
                if w not in graph:
                    continue
                if w not in index:
                    index[w] = low[w] = counter[0]
                    counter[0] += 1
                    stack.append(w)
                    on.add(w)
                    work.append((w, iter(sorted(graph[w]))))
                elif w in on:
                    low[v] = min(low[v], index[w])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[v])
            if low[v] == index[v]:
                comp = []
                while True:
                    x = stack.pop()
                    on.discard(x)
                    comp.append(x)
                    if x == v:
                        break
                if len(comp) > 1:
                    found.append(sorted(comp))
    return found


def test_cycle_finder_finds_a_cycle_through_a_function_local_import(tmp_path):
    for name, text in {"a.py": "import b\n", "b.py": "def f():\n    from c import x\n", "c.py": "import a\n",
                       "d.py": "import a\n"}.items():
        (tmp_path / name).write_text(text)
    graph = {p.stem: {m for m, _, _ in imports(p, tmp_path)} for p in tmp_path.glob("*.py")}
    assert cycles(graph) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_no_import_cycles_counting_function_local_imports():
    assert cycles(_graph()) == []


@pytest.mark.parametrize("path", [p for f in ALL_FOLDERS for p in _modules(f)], ids=lambda p: str(p.relative_to(ROOT)))
def test_no_private_name_from_another_module(path):
    me = _module_name(path)
    package = me if path.name == "__init__.py" else me.rpartition(".")[0]
    bad = []
    for mod, names, line in imports(path):
        if mod.split(".")[0] not in ALL_FOLDERS:
            continue
        if mod != me:
            bad += [(f"{mod}.{n}", line) for n in names if _private(n)]
        if _private(mod) and mod.rpartition(".")[0] != package:  # a private module of another package
            bad.append((mod, line))
    assert not bad, f"{path.relative_to(ROOT)} imports private names of other modules: {bad}"


LOCAL_OK = {
    # optional or heavy third-party dependencies, imported where they are used
    "matplotlib", "transformers", "datasets", "cvxpy", "sklearn", "scipy", "sae_lens", "sparsify", "gguf",
    "threadpoolctl", "torch.distributed", "tqdm", "safetensors", "multiprocessing", "concurrent", "importlib",
    "hashlib", "numpy", "fcntl",
}
"""Top-level names a library function may import inside itself; an internal module only in the CLI's start-up
(geomsae/cli.py, geomsae/commands/) and geomsae.load (``import geomsae`` stays free of torch)."""
CLI_STARTUP = ("geomsae/cli.py", "geomsae/commands/", "geomsae/__init__.py")


def _local_imports(path: Path) -> list[tuple[str, int]]:
    tree = ast.parse(path.read_text(), filename=str(path))
    top = {id(n) for n in tree.body}
    found = []
    for node in ast.walk(tree):
        if isinstance(node, (ast.Import, ast.ImportFrom)) and id(node) not in top:
            mod = node.module if isinstance(node, ast.ImportFrom) else node.names[0].name
            found.append((("." * getattr(node, "level", 0)) + (mod or ""), node.lineno))
    return found


@pytest.mark.parametrize("path", _modules(LIBRARY), ids=lambda p: str(p.relative_to(ROOT)))
def test_library_function_local_imports_are_justified(path):
    rel = str(path.relative_to(ROOT))
    bad = []
    for mod, line in _local_imports(path):
        internal = mod.startswith(".") or mod.split(".")[0] in ALL_FOLDERS
        if internal and not rel.startswith(CLI_STARTUP):
            bad.append((mod, line))
        elif not internal and not any(mod == ok or mod.startswith(ok + ".") for ok in LOCAL_OK):
            bad.append((mod, line))
    assert not bad, f"{rel} imports inside functions what it could import at the top: {bad}"


def test_public_api_is_exactly_all():
    import importlib

    import geomsae

    ns: dict = {}
    exec("from geomsae import *", ns)
    assert sorted(k for k in ns if k != "__builtins__") == sorted(geomsae.__all__)
    assert dir(geomsae) == sorted(geomsae.__all__)
    for pkg in ("saes", "solvers", "study", "interop", "commands"):
        mod = importlib.import_module(f"geomsae.{pkg}")
        assert mod.__all__, pkg
        ns = {}
        exec(f"from geomsae.{pkg} import *", ns)
        assert sorted(k for k in ns if k != "__builtins__") == sorted(mod.__all__), pkg
    with pytest.raises(AttributeError, match="no attribute 'Any'"):
        geomsae.Any  # noqa: B018


def test_documented_names_resolve():
    """Every `geomsae.<module>` the README or docs/method.md name resolves from the package."""
    import re

    import geomsae

    text = (ROOT / "README.md").read_text() + (ROOT / "docs" / "method.md").read_text()
    names = set(re.findall(r"`geomsae\.([a-z_]+)", text)) | set(re.findall(r"geomsae\.([a-z_]+)\(", text))
    assert names, "no documented name found"
    missing = [n for n in sorted(names) if not hasattr(geomsae, n) and not (ROOT / "geomsae" / f"{n}.py").exists()
               and not (ROOT / "geomsae" / n).is_dir()]
    assert not missing, f"documented but not in geomsae: {missing}"


def test_import_geomsae_and_cli_help_do_not_import_torch():
    code = ("import sys, geomsae; assert 'torch' not in sys.modules, 'import geomsae'; "
            "from geomsae.cli import main\n"
            "try:\n    main(['--help'])\nexcept SystemExit:\n    pass\n"
            "assert 'torch' not in sys.modules, 'geomsae --help'")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert r.returncode == 0, r.stderr

