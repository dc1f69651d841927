#!/usr/bin/env bash
# The nightly target: the long VM rehearsals that do not fit the per-submission CI budget under TCG,
# on top of the whole test suite:
# - vfio_host in a VM with an emulated IOMMU (over 45 min, mostly update-initramfs);
# - the slurm cluster converged with Ansible's own linear strategy, as plain ansible-playbook does
#   on real hosts (per-submission CI runs it with mitogen_linear; linear took 45 min here).
# On a KVM host they are far faster.
set -euo pipefail
cd "$(dirname "$0")/.."
export HARNESS_REQUIRE_VM=1 HARNESS_NIGHTLY=1
./ci/test.sh "$@"
HARNESS_ANSIBLE_STRATEGY=linear .venv/bin/harness run slurm --report-dir "${HARNESS_REPORT_DIR:-reports}/slurm-linear"
