#!/usr/bin/env bash
# Runs every test: installs the build prerequisites if missing, then `cargo test`.
# The tests make their own tiny models and data; nothing is downloaded.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh
cargo test --locked "$@"
