#!/usr/bin/env bash
# Every benchmark, each refreshing its block in docs/benchmarks.md. About 2.5 hours on a
# 2-core CPU; on a GPU machine the training-time budgets are the same, so about as long.
# Usage: bash benchmarks/run_all.sh            (from anywhere; needs pip install -e ".[bench,napari]")
set -euo pipefail
cd "$(dirname "$0")/.."
DOC=docs/benchmarks.md
PY=${PYTHON:-python}
# The GUI benchmarks need an X server (napari's canvas is OpenGL); Xvfb stands in for one.
gui() { if [ -n "${DISPLAY:-}" ]; then "$PY" "$@"; else xvfb-run -a -s "-screen 0 1600x1000x24" "$PY" "$@"; fi; }

"$PY" benchmarks/bench_core.py --write "$DOC"
"$PY" benchmarks/bench_memory.py --write "$DOC"
"$PY" benchmarks/bench_memory.py --passes --write "$DOC"
"$PY" benchmarks/bench_blocks.py --write "$DOC"
"$PY" benchmarks/bench_host.py --write "$DOC"
"$PY" benchmarks/bench_effort.py --write "$DOC"
"$PY" benchmarks/bench_volumes.py --write "$DOC"
"$PY" benchmarks/bench_images.py --write "$DOC"
gui benchmarks/bench_gui.py --write "$DOC"
gui benchmarks/bench_overlay.py --write "$DOC"
gui benchmarks/bench_painting.py --write "$DOC"
gui benchmarks/soak_gui.py --cycles 200 --write "$DOC"
echo "figures written to $DOC and docs/figures/"
