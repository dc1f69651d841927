#!/usr/bin/env bash
# Benchmark (figures, not a test): the rehearsal loops of one scenario, side by side, on this host,
# in one invocation:
#   1. naive         harness run S                          new cluster, destroyed at the end
#   2. kept          harness run S' --keep                  from nothing to a green verdict, kept
#   3. reuse-booted  harness run S' --reuse                 the kept cluster reset to `booted`
#   then the inner loop, each `harness run S' --reuse --from converged` after its own edit of the copy:
#   4. edit-first    a one-task edit of roles/common (the first role: the worst case)
#   5. edit-late     a one-task edit of a late role: the scenario's own role in the playbook's last play
#                    with roles (slurm: roles/slurm), else that play's last role; not applicable
#                    where that is roles/common (smoke); BENCH_LATE_ROLE=ROLE names another
#   6. comment       a comment-only edit of roles/common
# S' is a temporary copy of the scenario (same name) whose roles_path ends with a temporary copy of
# roles/; only that copy is edited, never the checkout, and the edits add up. A kept cluster is found
# by its scenario *file*, so loops 2-6 (and `status`, `destroy`) all use S'. The cluster is destroyed
# at the end, also on failure or interrupt. Prints, and writes to R/bench.md, the seconds of each
# phase (summary.json), the full and the quick verdict's seconds (up + provision + idempotence +
# verify's first pass) and their ratios to the naive loop's, whether the verdict was partial, the
# cluster's host RSS after loops 2 and 4-6, and the date and load average at start and end. Exit 1
# if a loop failed or did not run (after the table); skipped and not applicable loops are no failure.
#   sudo ./ci/bench.sh            # smoke
#   sudo ./ci/bench.sh slurm      # R = ${HARNESS_REPORT_DIR:-reports}/bench-<scenario name>
#   sudo BENCH_SKIP="reuse-booted" ./ci/bench.sh slurm
#                                 # loops left out (shown as skipped); without the naive loop the ratios
#                                 # are to loop 2 (kept: the same phases from nothing, without destroy)
# Prerequisite: ./ci/bootstrap.sh (the venv, the host set up, the box built).
set -uo pipefail

if [ $# -gt 1 ] || [ "${1:-}" = "-h" ] || [ "${1:-}" = "--help" ]; then
    awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"
    exit 2
fi
scenario=${1:-smoke}
[ -e "$scenario" ] && scenario=$(realpath -- "$scenario")  # a path given from elsewhere
cd "$(dirname "$0")/.." || exit 1
h=.venv/bin/harness
py=.venv/bin/python
if [ ! -x "$h" ] || [ ! -x "$py" ]; then
    echo "bench: $h missing: run ./ci/bootstrap.sh first" >&2
    exit 3
fi

name=$($py ci/bench.py name "$scenario") || exit 2
R=${HARNESS_REPORT_DIR:-reports}/bench-$name
mkdir -p "$R" || exit 1
rm -rf -- "$R/naive" "$R/kept" "$R/reuse-booted" "$R/reuse-converged" "$R/edit-first" "$R/edit-late" \
    "$R/comment" "$R/runs.tsv" "$R/bench.md" \
    "$R/setup.json" "$R/host-start.json" "$R/host-end.json" "$R"/rss-*.json
work=$(mktemp -d "${TMPDIR:-/tmp}/harness-bench-$name.XXXXXX") || exit 1
copy=""   # the copy's scenario file, once made
child=""  # the harness process running now, and its loop
loop_now=""
loop_start=""
started=0  # 1 once the first loop began: from then on, the table
failed=0

# --- teardown and the table, on every way out --------------------------------------------------
# `harness run` tears its own cluster down on SIGTERM (loop 1) and keeps it with --keep/--reuse;
# the copy's kept cluster is destroyed here. Then the end stamp and the table.
cluster_state() {  # "absent", "up", ... of the copy's cluster
    "$h" status "$copy" --json 2>/dev/null | $py -c 'import json, sys; print(json.load(sys.stdin)["state"])' 2>/dev/null \
        || echo unknown
}

finish() {
    local rc=$?
    trap - EXIT
    trap 'echo "bench: tearing down, please wait" >&2' INT TERM HUP
    if [ "$started" -eq 0 ]; then  # stopped while checking the scenario: nothing ran, nothing to show
        rm -rf -- "$work"
        exit "$rc"
    fi
    [ "$rc" -eq 0 ] || failed=1
    local left=""
    if [ -n "$copy" ]; then
        if [ "$(cluster_state)" != absent ]; then
            echo "== destroy: harness destroy $copy"
            "$h" destroy "$copy" || failed=1
        fi
        state=$(cluster_state)
        if [ "$state" != absent ]; then
            left=$state
            failed=1
        fi
    fi
    echo
    $py ci/bench.py stamp "$R" end
    echo
    $py ci/bench.py table "$R" || failed=1
    if [ -n "$left" ]; then
        echo "bench: the cluster of $copy is still there (state $left): harness destroy $copy" >&2
        echo "bench: kept $work (the copy the cluster belongs to)" >&2
    else
        rm -rf -- "$work"
    fi
    [ "$rc" -ge 128 ] && exit "$rc"
    exit "$failed"
}

on_signal() {  # forward to the harness (it tears down on SIGTERM), wait for it, then finish
    trap 'echo "bench: waiting for the harness (pid $child) to finish its teardown" >&2' INT TERM HUP
    echo "bench: interrupted" >&2
    if [ -n "$child" ]; then
        kill -TERM "$child" 2>/dev/null
        wait "$child"
        printf '%s\t%s\t%s\t%s\t%s\n' "$loop_now" "$?" "$loop_start" "$(date +%s.%N)" "interrupted" >>"$R/runs.tsv"
        child=""
    fi
    exit "$1"
}
trap finish EXIT
trap 'on_signal 130' INT
trap 'on_signal 143' TERM
trap 'on_signal 129' HUP

# --- the loops ---------------------------------------------------------------------------------
# The harness runs in the background so that a signal reaches this script at once (and is forwarded
# to it) rather than after the loop.
run_loop() {  # LOOP ARGS...: `harness ARGS`, its exit code and wall time into runs.tsv
    local loop=$1 rc start end
    shift
    echo
    echo "== $loop: harness $*"
    start=$(date +%s.%N)
    loop_now=$loop loop_start=$start started=1
    "$h" "$@" &
    child=$!
    wait "$child"
    rc=$?
    child=""
    end=$(date +%s.%N)
    printf '%s\t%s\t%s\t%s\t\n' "$loop" "$rc" "$start" "$end" >>"$R/runs.tsv"
    [ "$rc" -eq 0 ] || failed=1
    return 0
}

not_run() {  # LOOP REASON
    printf '%s\t-\t\t\t%s\n' "$1" "$2" >>"$R/runs.tsv"
    echo "== $1: not run: $2"
    failed=1
}

not_applicable() {  # LOOP WHY: recorded, no failure
    printf '%s\t-\t\t\t%s\n' "$1" "$2" >>"$R/runs.tsv"
    echo "== $1: $2"
}

skipped() {  # LOOP: true (and recorded) when BENCH_SKIP names LOOP
    case " ${BENCH_SKIP:-} " in
        *" $1 "*)
            printf '%s\t-\t\t\t%s\n' "$1" "skipped (BENCH_SKIP)" >>"$R/runs.tsv"
            echo "== $1: skipped (BENCH_SKIP)"
            return 0 ;;
    esac
    return 1
}

rss_after() {  # LOOP: the kept cluster's host RSS, right after LOOP
    "$h" status "$copy" --json >"$R/rss-$1.json" 2>/dev/null || rm -f -- "$R/rss-$1.json"
}

echo "harness bench of scenario $name; reports in $R"
$py ci/bench.py stamp "$R" start
[ "$("$h" status "$scenario" --json 2>/dev/null | $py -c 'import json,sys; print(json.load(sys.stdin)["state"])' 2>/dev/null)" = up ] \
    && echo "bench: note: a kept cluster of $scenario is up (not touched here): it loads the host" >&2

# The copy first (loops 2-6 use its file), checked before any VM boots.
copy=$($py ci/bench.py prepare "$scenario" "$work" "$R") || exit 2
echo "copy of the scenario: $copy"
"$h" validate "$copy" || exit 2

skipped naive || run_loop naive run "$scenario" --report-dir "$R/naive"
run_loop kept run "$copy" --keep --report-dir "$R/kept"
rss_after kept
# --reuse without a kept cluster would quietly bring up a new one: not what these loops measure.
if skipped reuse-booted; then
    :
elif [ "$(cluster_state)" = up ]; then
    run_loop reuse-booted run "$copy" --reuse --report-dir "$R/reuse-booted"
else
    not_run reuse-booted "no kept cluster after loop 2 (kept)"
fi

edit_loop() {  # LOOP EDIT-ARGS...: edit the copy (`bench.py EDIT-ARGS`), then converge it on the kept cluster
    local loop=$1
    shift
    skipped "$loop" && return 0
    if [ "$(cluster_state)" != up ]; then
        not_run "$loop" "no kept cluster after the loops before"
        return 0
    fi
    if ! $py ci/bench.py "$@"; then
        not_run "$loop" "the edit of the copy failed: bench.py $*"
        return 0
    fi
    run_loop "$loop" run "$copy" --reuse --from converged --report-dir "$R/$loop"
    rss_after "$loop"
}

edit_loop edit-first edit "$work" "$R" edit-first
late=$($py ci/bench.py late-role "$R")
case $? in
    0) edit_loop edit-late edit "$work" "$R" edit-late "$late" ;;
    3) skipped edit-late || not_applicable edit-late "$late" ;;
    *) not_run edit-late "no late role: bench.py late-role $R failed" ;;
esac
edit_loop comment comment "$work" "$R" comment
exit "$failed"  # finish (EXIT trap): destroy, end stamp, table
