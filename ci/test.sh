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
# Unit tests on every core (pytest-xdist; about 2 min instead of 3.5 on 2 cores), then the VM tests
# in one process (they share the host's libvirt and CPU; side by side they only slow each other).
.venv/bin/python -m pytest tests/unit -n "${HARNESS_UNIT_WORKERS:-auto}" "$@"
exec .venv/bin/python -m pytest tests/vm "$@"
