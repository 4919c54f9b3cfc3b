"""The import graph of the command line and the data modules: no loop, no private names across modules."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
MODULES = ["geomsae/cli.py", "geomsae/config_cli.py", "geomsae/evaluate.py", "geomsae/compare.py",
           "geomsae/compare_report.py", "geomsae/data.py", "geomsae/shards.py",
           *sorted(str(p.relative_to(ROOT)) for p in (ROOT / "geomsae" / "commands").glob("*.py"))]


@pytest.mark.parametrize("path", MODULES)
def test_no_private_names_imported_from_other_geomsae_modules(path):
    tree = ast.parse((ROOT / path).read_text())
    bad = [f"{node.module}.{a.name}" for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)
           and (node.module or "").startswith("geomsae") for a in node.names if a.name.startswith("_")]
    assert bad == [], f"{path} imports private names {bad}"


@pytest.mark.parametrize("command", ["train", "evaluate", "compare", "solve", "harvest", "export", "import_sae"])
def test_a_command_module_does_not_import_another(command):
    code = (f"import sys, geomsae.commands.{command}; "
            "print(sorted(m for m in sys.modules if m.startswith('geomsae.commands.')))")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    assert set(eval(out)) <= {f"geomsae.commands.{command}", "geomsae.commands.common"}
