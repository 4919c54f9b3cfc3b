#!/usr/bin/env bash
# One prepared GPU benchmark for a single H200 (< 5 min: the step timeouts sum to 300 s; no network). From the repository root:
#
#     bash bench/gpu.sh 2>&1 | tee gpu.log
#
# Needs torch with CUDA. geomsae also imports numpy, safetensors and tqdm, and the preset runs
# need transformers + tokenizers: if they are missing the script installs them, offline, from
# bench/wheels/ (prepare that folder on a networked machine of the same Python version with
#     pip download --only-binary=:all: -d bench/wheels numpy safetensors tqdm transformers
# ) into a throw-away venv that sees the system torch; a step whose imports fail is reported
# as SKIPPED and the script goes on. Every step runs under its own timeout; the table at the end
# collects the rows the steps printed. Not run yet: no GPU was lent to the session that wrote it.
set -euo pipefail
cd "$(dirname "$0")/.."
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
PY=${PYTHON:-python3}
LOG=$(mktemp -d)/gpu_rows.txt
: >"$LOG"
T0=$(date +%s)

have() { "$PY" -c "import $1" >/dev/null 2>&1; }
if ! have numpy || ! have safetensors || ! have tqdm || ! have transformers; then
  if [ -d bench/wheels ]; then
    VENV=$(mktemp -d)/venv
    "$PY" -m venv --system-site-packages "$VENV"
    "$VENV/bin/pip" install -q --no-index --find-links bench/wheels numpy safetensors tqdm transformers || \
      echo "gpu.sh: offline install from bench/wheels incomplete" >&2
    PY="$VENV/bin/python"
  else
    echo "gpu.sh: numpy/safetensors/tqdm/transformers missing and no bench/wheels/: some steps will be SKIPPED" >&2
  fi
fi
"$PY" - <<'PYEOF'
import platform, torch
print(f"python {platform.python_version()}, torch {torch.__version__}, cuda {torch.version.cuda}, "
      f"device {torch.cuda.get_device_name(0) if torch.cuda.is_available() else 'NONE'}")
PYEOF

step() {  # step NAME TIMEOUT_S CMD...: run, keep the table rows ("| ..."), never abort the script
  local name=$1 limit=$2; shift 2
  echo "== $name (timeout ${limit}s, t=$(( $(date +%s) - T0 ))s)"
  local out rc=0
  out=$(timeout --kill-after=10 "$limit" "$@" 2>&1) || rc=$?
  printf '%s\n' "$out" | tail -n 40
  printf '%s\n' "$out" | grep '^|' >>"$LOG" || true
  if [ "$rc" -ne 0 ]; then echo "| $name | FAILED or SKIPPED (exit $rc) | | |" >>"$LOG"; fi
}

S="$PY bench/gpu_steps.py"
step roofline          20 $S roofline
step "train 512x4096"  40 $S train --size small --steps 20
step "train 4096x131072" 90 $S train --size large --steps 5
step "stacked sweep"   30 $S stack --members 8 --steps 10
step "solver"          30 $S solver

# The pythia70m and llama8b presets end to end on tiny random models of their architectures
# (bf16 harvest on CUDA, stacked training, CE recovered), shrunk to seconds.
step "presets" 90 "$PY" - <<'PYEOF'
import importlib, os, sys, tempfile, time, types
from pathlib import Path
if importlib.util.find_spec("pytest") is None:  # tests/tiny_lm.py only uses pytest.importorskip
    sys.modules["pytest"] = types.SimpleNamespace(importorskip=importlib.import_module)
sys.path.insert(0, "tests")
from tiny_lm import save_tiny, write_text  # needs transformers + tokenizers
from llm_eval import starvation

tmp = Path(tempfile.mkdtemp())
text = write_text(tmp / "text", copies=12)
small = ["--train-tokens", "4096", "--eval-tokens", "512", "--ce-contexts", "4", "--ctx-len", "32",
         "--harvest-batch", "8", "--shard-tokens", "1024", "--d-sae", "64", "--steps", "60",
         "--batch-size", "128", "--seeds", "0", "--eval-windows", "256", "--dead-window-tokens", "2048",
         "--l0-targets", "4", "--topk-ks", "4", "--sweep-points", "2", "--layer", "1",
         "--device", os.environ.get("GPU_SH_DEVICE", "cuda"), "--model-dtype", "bfloat16"]
for preset, arch in (("pythia70m", "gpt_neox"), ("llama8b", "llama")):
    model = save_tiny(tmp / arch, arch)
    t = time.perf_counter()
    rc = starvation.main(["--preset", preset, "--model", str(model), "--text", str(text),
                          "--out", str(tmp / f"out_{preset}"), "--results", str(tmp / f"res_{preset}"), *small])
    print(f"| preset {preset} (tiny {arch}, bf16) | exit {rc} | {time.perf_counter() - t:.0f} s | |")
PYEOF

echo
echo "== table (total $(( $(date +%s) - T0 )) s)"
echo "| part | case | result | fraction |"
echo "|---|---|---|---|"
cat "$LOG"
