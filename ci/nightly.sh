#!/usr/bin/env bash
# The nightly target: the long VM rehearsals that do not fit the per-submission CI budget under TCG
# (vfio_host in a VM with an emulated IOMMU: over 45 min, mostly update-initramfs), on top of the
# whole test suite. On a KVM host they are far faster.
set -euo pipefail
cd "$(dirname "$0")/.."
export HARNESS_REQUIRE_VM=1 HARNESS_NIGHTLY=1
exec ./ci/test.sh "$@"
