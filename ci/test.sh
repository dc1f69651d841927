#!/usr/bin/env bash
# Run the test suite: unit tests, then VM tests that boot real libvirt VMs.
# With HARNESS_REQUIRE_VM=1 (CI) a VM test that cannot run fails instead of skipping.
set -euo pipefail
cd "$(dirname "$0")/.."
./ci/bootstrap.sh
.venv/bin/ruff check harness tests
.venv/bin/mypy harness
exec .venv/bin/python -m pytest tests "$@"
