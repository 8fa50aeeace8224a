#!/usr/bin/env bash
# Create PaddleX 3.7.2's own virtual environment for the benchmarks (one time, a few minutes).
# PaddleX gets a venv of its own so that it runs with the dependencies it pins,
# not ours, and pxflow never imports it.
# Usage: bench/setup_paddlex.sh [VENV_DIR]   (default: bench/.venvs/paddlex, gitignored)
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
venv="${1:-$here/.venvs/paddlex}"
python="${PYTHON:-python3.11}"
command -v "$python" >/dev/null || python=python3
if [ ! -x "$venv/bin/python" ]; then
    "$python" -m venv "$venv"
fi
"$venv/bin/python" -m pip install --quiet --upgrade pip
"$venv/bin/python" -m pip install --quiet "paddlex[cv]==3.7.2" "paddlepaddle==3.2.2" onnxruntime
"$venv/bin/python" -c "import paddlex, paddle, onnxruntime; print('paddlex', paddlex.__version__, 'paddle', paddle.__version__, 'onnxruntime', onnxruntime.__version__)"
