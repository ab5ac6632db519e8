#!/usr/bin/env bash
# Create .venv with the pinned dependencies and install the `pipeline` package (editable).
# Idempotent: a venv whose recorded requirements hash matches is reused as is.
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-python3.11}"
command -v "$PY" >/dev/null 2>&1 || PY=python3
stamp=".venv/.requirements.sha256"
want="$(cat envs/requirements.txt pyproject.toml | sha256sum | cut -d' ' -f1)"
if [[ -f "$stamp" && "$(cat "$stamp")" == "$want" ]]; then
    exit 0
fi
"$PY" -m venv .venv
# One pip command for torch/torchvision/timm so pip cannot swap torch for another build.
.venv/bin/python -m pip install --quiet -r envs/requirements.txt
.venv/bin/python -m pip install --quiet --no-deps --no-build-isolation -e .
echo "$want" > "$stamp"
