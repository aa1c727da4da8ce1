#!/usr/bin/env bash
# Scenario: the TDE program (tde.sh, conformance/tde/tde.c) against a three-instance cks
# cluster while one instance fails and comes back.
#
#   conformance/tde_cluster.sh [--module PATH] [--iterations N]
#
# hsm2 has a fault_file (the test hook: while the file exists, the instance answers every
# call with CKR_DEVICE_ERROR). About 1 s after the TDE program starts (its metrics file
# appears in the key store's metrics/ directory) the file is created; 1.5 s later it is
# removed. Every TDE check must still pass (no call may fail), the module must have noticed
# the failure and repaired hsm2 afterwards, `cks hsm sync` must succeed and
# `cks hsm list --json` must show three healthy instances holding the same keys.
# cks only (SoftHSM has no cluster). N (default 60000, or $TDE_CLUSTER_ITERATIONS) sets how
# long the TDE threads run; the fault window must fall inside the run.
ITERATIONS=${TDE_CLUSTER_ITERATIONS:-60000}
while [ $# -gt 0 ]; do
    case "$1" in
        --module) export MODULE=$2; shift 2 ;;
        --iterations) ITERATIONS=$2; shift 2 ;;
        *) echo "usage: $0 [--module PATH] [--iterations N]" >&2; exit 2 ;;
    esac
done
# This scenario makes its own cluster; a suite-wide configuration does not apply.
unset CKS_SUITE_CONFIG
SCENARIO=tde_cluster
. "$(dirname "$0")/lib.sh"

if is_softhsm; then
    info "skipped: the cluster scenario needs cks"
    finish
fi
CKS=${CKS_BIN:-$(dirname "${PKCS11SPY:-$MODULE}")/cks}
[ -x "$CKS" ] || CKS=$REPO_ROOT/target/release/cks
if [ ! -x "$CKS" ]; then
    fail cks-binary "the cks command is not next to the module nor in target/release"
    finish
fi

DATA=$WORK/cluster-data
FAULT=$WORK/hsm2.fault
CFG=$WORK/cluster.toml
cat >"$CFG" <<EOF
[keystore]
label = "$TOKEN_LABEL"
data_dir = "$DATA"

[kdf]
memory_kib = 8192
iterations = 1

[[hsm]]
id = "hsm1"
kind = "embedded"

[[hsm]]
id = "hsm2"
kind = "embedded"
fault_file = "$FAULT"

[[hsm]]
id = "hsm3"
kind = "embedded"
EOF
export CKS_SUITE_CONFIG=$CFG CKS_CONFIG=$CFG
setup_token || finish

# metric_of PID METRIC INSTANCE: the value the process PID last published.
metric_of() {
    sed -n "s/^$2{instance=\"$3\",pid=\"$1\"} //p" "$DATA/metrics/cks-$1.prom" 2>/dev/null
}

# The TDE program's process: a module user whose command line is "tde run ...".
tde_run_pid() {
    local f pid
    for f in "$DATA"/metrics/cks-*.prom; do
        [ -e "$f" ] || continue
        pid=${f##*/cks-}
        pid=${pid%.prom}
        if tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -q '/tde run '; then
            echo "$pid"
            return 0
        fi
    done
    return 1
}

rm -f "$FAULT"
"$CONF_DIR/tde.sh" --config "$CFG" --iterations "$ITERATIONS" >"$WORK/tde.out" 2>&1 &
TDE_SH=$!
BG_PIDS+=("$TDE_SH")

RUN_PID=""
for _ in $(seq 1 600); do
    RUN_PID=$(tde_run_pid) && break
    kill -0 "$TDE_SH" 2>/dev/null || break
    sleep 0.1
done

if [ -z "$RUN_PID" ]; then
    fail fault-window "the TDE program never started (or published no metrics)"
else
    info "tde run is process $RUN_PID; hsm2 fails in 1 s for 1.5 s"
    sleep 1
    touch "$FAULT"
    noticed=0
    for _ in $(seq 1 15); do
        sleep 0.1
        [ "$(metric_of "$RUN_PID" cks_hsm_healthy hsm2)" = 0 ] && noticed=1
    done
    rm -f "$FAULT"
    if kill -0 "$RUN_PID" 2>/dev/null; then
        pass fault-window-inside-run
    else
        fail fault-window-inside-run "the TDE program ended before hsm2 came back (raise --iterations)"
    fi
    # The module publishes its view once a second; it may notice after a short delay.
    for _ in $(seq 1 20); do
        [ $noticed = 1 ] && break
        kill -0 "$RUN_PID" 2>/dev/null || break
        [ "$(metric_of "$RUN_PID" cks_hsm_healthy hsm2)" = 0 ] && noticed=1
        sleep 0.1
    done
    if [ $noticed = 1 ]; then
        pass hsm2-failure-noticed
    else
        fail hsm2-failure-noticed "the TDE process never reported hsm2 unhealthy"
    fi
    back=0
    for _ in $(seq 1 100); do
        kill -0 "$RUN_PID" 2>/dev/null || break
        if [ "$(metric_of "$RUN_PID" cks_hsm_healthy hsm2)" = 1 ]; then
            back=1
            break
        fi
        sleep 0.1
    done
    if [ $back = 1 ]; then
        pass hsm2-repaired-during-run
    elif kill -0 "$RUN_PID" 2>/dev/null; then
        fail hsm2-repaired-during-run "hsm2 still unhealthy 10 s after its fault was removed"
    else
        info "the TDE program ended before hsm2 was repaired in it"
    fi
fi

wait "$TDE_SH"
rc=$?
BG_PIDS=()
out=$(cat "$WORK/tde.out")
# The TDE checks, counted as this scenario's (renamed so they are not confused with tde's).
lines=$(printf '%s\n' "$out" | grep -E '^(PASS|FAIL) ' | sed -E 's#^(PASS|FAIL) #\1 tde_cluster/#')
[ -n "$lines" ] && printf '%s\n' "$lines"
p=$(printf '%s\n' "$lines" | grep -c '^PASS ')
f=$(printf '%s\n' "$lines" | grep -c '^FAIL ')
N_PASS=$((N_PASS + p))
N_FAIL=$((N_FAIL + f))
if [ "$rc" -ne 0 ] && [ "$f" -eq 0 ]; then
    fail tde "tde.sh exited with status $rc" "$out"
fi
if [ "$p" -lt 10 ]; then
    fail tde-ran "only $p TDE checks passed" "$out"
fi

check hsm-sync "CKS_PIN=$USER_PIN '$CKS' --config '$CFG' hsm sync"
check hsm-list-all-healthy-same-keys "
    '$CKS' --config '$CFG' hsm list --json | python3 -c '
import json, sys
rows = json.load(sys.stdin)
print(rows)
assert len(rows) == 3, \"expected three instances\"
assert all(r[\"healthy\"] for r in rows), \"an instance is not healthy\"
keys = {r[\"keys\"] for r in rows}
assert len(keys) == 1 and keys.pop() >= 1, \"instances hold different numbers of keys\"
'"

finish
