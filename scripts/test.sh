#!/usr/bin/env bash
# Runs every test: installs the build prerequisites if missing, then `cargo test`.
# The tests make their own tiny models and data; the one download is the gguf Python package
# (llama.cpp's GGUF reader, from PyPI) into target/py, for a cross-check.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh
# llama.cpp's Python GGUF reader (the gguf package), which tests/it/gguf_py.rs compares with ours.
if [ ! -x target/py/bin/python ] || ! target/py/bin/python -c 'import gguf' 2>/dev/null; then
  { python3 -m venv target/py && target/py/bin/pip install --quiet --disable-pip-version-check gguf==0.19.0; } ||
    echo "test.sh: could not install the gguf Python package; its cross-check will be skipped" >&2
fi
cargo test --locked "$@"
