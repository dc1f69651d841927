#!/usr/bin/env bash
# The main job on a fresh host: set the host up, build the box, then rehearse a scenario end to
# end with `harness run`: bring the cluster up, provision it, converge again to prove idempotence,
# verify it with its tests, tear it down, and write the reports. Exit code 0 only if every phase
# passed.
#   sudo ./ci/demo.sh            # smoke: 2 nodes, roles/common (about 7 min under TCG)
#   sudo ./ci/demo.sh slurm      # the 4-node Slurm GPU cluster (about 25 min under TCG)
set -euo pipefail
cd "$(dirname "$0")/.."
./ci/bootstrap.sh
h=.venv/bin/harness
scenario=${1:-smoke}
reports=${HARNESS_REPORT_DIR:-reports}/demo-$scenario

$h doctor --scenario "$scenario" || true
# `harness run` destroys the cluster at the end whatever happens (Ctrl-C included).
status=0
$h run "$scenario" --report-dir "$reports" || status=$?
echo
cat "$reports/summary.md" 2>/dev/null || true
echo "reports: $reports (summary.md, summary.json, junit.xml)"
exit "$status"
