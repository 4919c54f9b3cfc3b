"""Would another machine read the verdicts the same way? Compare two runs of one starvation design.

    python -m synthetic.starvation --preset quick --float-jitter 1e-6 --out runs/quick_jitter
    python -m synthetic.agreement runs/starvation_quick runs/quick_jitter --out runs/quick_jitter/agreement.md

Reads both folders' ``verdicts.csv`` (and ``config.json``, to say what differs), classes every
comparison with :func:`geomsae.study.agreement.agree` and writes a markdown report: counts per
class, the claims whose tallies moved, and every changed comparison whose effect exceeds its
minimum size in both runs. Nothing is trained here.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from geomsae.config_cli import OneLineErrors
from geomsae.study.agreement import KINDS, agree, readings_differ
from geomsae.study.report import md_table
from geomsae.study.tables import read_csv


def cell_keys(header: list[str]) -> tuple[str, ...]:
    """The study's cell keys: the verdicts.csv columns between 'metric' and 'l0_target'."""
    try:
        return tuple(header[header.index("metric") + 1:header.index("l0_target")])
    except ValueError as e:
        raise ValueError(f"not a verdicts.csv header (needs 'metric' and 'l0_target'): {header}") from e


def config_diff(a: Path, b: Path) -> list[str]:
    """'field: A → B' for each config.json field that differs (empty when a config is missing)."""
    try:
        ca, cb = (json.loads((p / "config.json").read_text()) for p in (a, b))
    except FileNotFoundError:
        return []
    return [f"{k}: {ca.get(k)!r} → {cb.get(k)!r}" for k in sorted(set(ca) | set(cb)) if ca.get(k) != cb.get(k)]


def report(a: Path, b: Path) -> tuple[list[str], dict]:
    """Markdown lines and the :func:`agree` result for run folders ``a`` and ``b``."""
    for p in (a, b):
        if not (p / "verdicts.csv").is_file():
            raise FileNotFoundError(f"{p / 'verdicts.csv'} does not exist: is {p} a finished starvation run?")
    rows_a, rows_b = read_csv(a / "verdicts.csv"), read_csv(b / "verdicts.csv")
    keys = cell_keys(list(rows_a[0]) if rows_a else [])
    res = agree(rows_a, rows_b, keys)
    lines = [f"# Verdict agreement: `{a}` (A) against `{b}` (B)", ""]
    diff = config_diff(a, b)
    lines += ["Configs differ in: " + ("; ".join(diff) if diff else "nothing (or a config is missing)"), ""]
    n = len(res["pairs"])
    lines += [f"{n} comparisons in both runs ({res['only_a']} only in A, {res['only_b']} only in B):", ""]
    lines += md_table(["class", "comparisons", "meaning"],
                      [[k, str(res["counts"][k]), m] for k, m in zip(KINDS, (
                          "same label", "one side underpowered or n/a (on the confidence threshold)",
                          "two different resolved labels", "holds against does not hold"))])
    big = res["big_changes"]
    lines += ["", f"Changed comparisons whose |AEN advantage| ≥ the minimum effect in both runs: **{len(big)}**", ""]
    if big:
        cols = ["claim", "metric", *keys, "l0_target", "other", "verdict_a", "verdict_b", "effect_a", "effect_b",
                "min_effect"]
        lines += md_table(cols, [[p[c] if isinstance(p[c], str) else f"{p[c]:.4g}" for c in cols] for p in big])
    moved = readings_differ(rows_a, rows_b)
    lines += ["", f"Claims whose tally of labels moved: {len(moved)} of "
              f"{len(dict.fromkeys(r['claim'] for r in rows_a))}", ""]
    if moved:
        lines += md_table(["claim", "A", "B"], [[f"({c})", ta, tb] for c, (ta, tb) in moved.items()])
    return lines, res


def main(argv: list[str] | None = None) -> int:
    p = OneLineErrors(prog="python -m synthetic.agreement", description=__doc__.split("\n\n")[0])
    p.add_argument("run_a", type=Path, help="a finished run folder (with verdicts.csv)")
    p.add_argument("run_b", type=Path, help="another run of the same design")
    p.add_argument("--out", type=Path, default=None, help="write the markdown here (default: print it)")
    args = p.parse_args(argv)
    try:
        lines, _ = report(args.run_a, args.run_b)
    except (FileNotFoundError, ValueError) as e:
        print(f"synthetic.agreement: {e}", file=sys.stderr)
        return 2
    text = "\n".join(lines) + "\n"
    if args.out is None:
        print(text, end="")
    else:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text)
        print(f"synthetic.agreement: wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
