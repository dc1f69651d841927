#!/usr/bin/env bash
# Run the test suite: unit tests, then VM tests that boot real libvirt VMs.
# With HARNESS_REQUIRE_VM=1 (CI) a VM test that cannot run fails instead of skipping.
set -euo pipefail
cd "$(dirname "$0")/.."
./ci/bootstrap.sh
# The oldest supported ansible-core beside .venv's newest (seconds: it holds ansible-core only).
./ci/ansible-oldest.sh
.venv/bin/ruff check harness tests
.venv/bin/mypy harness tests
# Roles and playbooks (site.yml and variants such as k8s/site-slurm-k8s.yml), production profile
# (.ansible-lint). Offline: no version check, no schema refresh, no Galaxy installs. The venv's bin
# on PATH lets it find ansible-playbook and ansible-config.
PATH="$PWD/.venv/bin:$PATH" .venv/bin/ansible-lint --offline roles scenarios/*/site*.yml
# The nightly CI templates, against the GitHub Actions and GitLab CI schemas vendored in
# check-jsonschema (built-in schemas are never downloaded: this works without a network).
.venv/bin/check-jsonschema --builtin-schema vendor.github-workflows ci/github/nightly.yml
.venv/bin/check-jsonschema --builtin-schema custom.github-workflows-require-timeout ci/github/nightly.yml
.venv/bin/check-jsonschema --builtin-schema vendor.gitlab-ci --data-transform gitlab-ci ci/gitlab/nightly.yml
# The harness from a wheel, outside this checkout; the roles as the harness.cluster collection.
./ci/wheel-check.sh
# Given a test path, run just that, in one process.
for arg in "$@"; do
  case "$arg" in -*) ;; *) exec .venv/bin/python -m pytest "$@" ;; esac
done
# The unit tests that run real ansible-playbook, on the oldest supported ansible-core (the harness
# runs the ansible-playbook beside its Python); everything below runs on .venv's newest.
.venv-ansible-oldest/bin/python -m pytest -m ansible -n "${HARNESS_UNIT_WORKERS:-auto}" -p no:cacheprovider -q tests/unit
# Unit tests on every core (pytest-xdist; about 2 min instead of 3.5 on 2 cores), then the VM tests:
# first those that must have the host to themselves, one after another; then two lanes at once, two
# pytest processes (tests/vm/conftest.py LANES): slurm, and a few one-node runs beside it (slurm's
# four VMs leave part of the cores idle). The slurm lane's output follows the other's.
# HARNESS_VM_LANES=1 runs the lanes one after another instead.
.venv/bin/python -m pytest tests/unit -n "${HARNESS_UNIT_WORKERS:-auto}" "$@"
lane() { .venv/bin/python -c "from tests.vm.conftest import LANES; print(' '.join('tests/vm/' + f for f in LANES['$1']))"; }
slurm_lane=$(lane slurm)
beside_lane=$(lane beside-slurm)
ignore=()
for f in $slurm_lane $beside_lane; do ignore+=("--ignore=$f"); done
rc=0
.venv/bin/python -m pytest tests/vm "${ignore[@]}" "$@" || rc=$?
if [ "${HARNESS_VM_LANES:-2}" = 1 ]; then
  .venv/bin/python -m pytest $slurm_lane $beside_lane "$@" || rc=$?
  exit $rc
fi
lanes=$(mktemp -d)
# (Every command here must succeed: under `set -e` a failing one would become the script's exit code.)
trap 'if [ -n "${slurm_pid:-}" ]; then kill "$slurm_pid" 2>/dev/null || true; fi; rm -rf "$lanes"' EXIT
# Each lane its own --basetemp: two pytest sessions never share or prune each other's temp dirs.
.venv/bin/python -m pytest $slurm_lane --basetemp="$lanes/slurm" "$@" >"$lanes/slurm.log" 2>&1 &
slurm_pid=$!
.venv/bin/python -m pytest $beside_lane --basetemp="$lanes/beside" "$@" || rc=$?
slurm_rc=0
wait "$slurm_pid" || slurm_rc=$?
echo "=== the slurm lane (ran beside the tests above) ==="
cat "$lanes/slurm.log"
[ "$slurm_rc" = 0 ] || rc=$slurm_rc
exit $rc
