#!/usr/bin/env bash
# The long form of the fault suite (issue 9), in release mode:
#   - the damage sweep with positions widened (LOGQUEUE_FAULT_LONG=1),
#   - faults at every file operation of the larger scripted queue workload,
#   - real kill -9 loops on a queue, LOGQUEUE_FAULT_ROUNDS rounds per variant (200),
#   - the real kill -9 loop on an exactly-once pipeline (queue over log A, settle_into
#     log B, the outcome feed; issue 13), the same number of rounds.
# Prints each part's figures (cases per file kind, crash points per fault kind, rounds,
# records, violations) and a summary; exits non-zero when any part found a violation.
#
# Usage: scripts/fault-suite.sh            (from the repository root)
#        LOGQUEUE_FAULT_ROUNDS=500 LOGQUEUE_SEED=7 scripts/fault-suite.sh
set -u
cd "$(dirname "$0")/.."

export LOGQUEUE_FAULT_LONG=1
export LOGQUEUE_FAULT_ROUNDS="${LOGQUEUE_FAULT_ROUNDS:-200}"
log_dir="$(mktemp -d "${TMPDIR:-/tmp}/logqueue-fault-suite.XXXXXX")"
echo "fault suite (long form): rounds=$LOGQUEUE_FAULT_ROUNDS seed=${LOGQUEUE_SEED:-random}; output in $log_dir"

tests="fault_damage_sweep fault_queue_ops fault_kill9_queue fault_kill9_pipeline"
cargo test --release --no-run --test fault_damage_sweep --test fault_queue_ops \
    --test fault_kill9_queue --test fault_kill9_pipeline >/dev/null 2>&1 || {
    echo "build failed"; cargo test --release --no-run --test fault_damage_sweep; exit 2;
}

declare -A status
declare -A took
for t in $tests; do
    start=$(date +%s)
    # --test-threads=1 for the kill loops: each variant spawns its own children.
    cargo test --release -q --test "$t" -- --nocapture --test-threads=1 >"$log_dir/$t.out" 2>&1
    status[$t]=$?
    took[$t]=$(( $(date +%s) - start ))
    echo
    echo "=== $t (${took[$t]} s, exit ${status[$t]})"
    # The figures: tables, counts, the violations by kind.
    grep -E '^(==|kind |[a-z-]+/|power loss|kill -9|EIO|ENOSPC|workload:|kill9 queue|kill9 pipeline|violations|  +[0-9]+ x|elapsed|undamaged)' \
        "$log_dir/$t.out" | head -120
done

echo
echo "=== summary"
failed=0
for t in $tests; do
    v=$(grep -E '^violations: ' "$log_dir/$t.out" | awk '{s += $2} END {print s + 0}')
    if [ "${status[$t]}" -eq 0 ]; then r=pass; else r=FAIL; failed=1; fi
    printf '%-22s %-5s %6s violations %6s s\n' "$t" "$r" "$v" "${took[$t]}"
done
echo "full output: $log_dir"
exit $failed
