#!/usr/bin/env bash
# Create .venv and install dataeng-gym with its test tools. Safe to run again: it only adds what
# is missing.
#
# torch: if the venv has no torch yet, this installs torch==2.13.0 (override with TORCH_SPEC).
# On the project's CPU machines that resolves to a local CPU wheel; on a GPU machine, install the
# CUDA build of torch you want into .venv first (or set TORCH_SPEC), and this step is skipped.
set -euo pipefail
cd "$(dirname "$0")/.."
python=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$python" -m venv .venv
pip() { .venv/bin/python -m pip --disable-pip-version-check -q "$@" 2>&1 | grep -v "is ignored" || true; }
if ! .venv/bin/python -c "import torch" 2>/dev/null; then
  echo "setup: installing ${TORCH_SPEC:-torch==2.13.0}" >&2
  pip install "${TORCH_SPEC:-torch==2.13.0}"
fi
if ! .venv/bin/python -c "import dataeng_gym, pytest, ruff, peft, openai, fastapi, uvicorn, ray, wandb, datasets, matplotlib" 2>/dev/null; then
  echo "setup: installing dataeng-gym[dev] (editable)" >&2
  pip install -e ".[dev]"
fi
.venv/bin/python -c "import dataeng_gym, torch; print(f'setup: dataeng-gym {dataeng_gym.__version__}, torch {torch.__version__}')" >&2
