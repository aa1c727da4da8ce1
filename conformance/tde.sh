#!/usr/bin/env bash
# Scenario: TDE (Oracle model) through the C ABI: conformance/tde/tde.c, built with gcc
# against p11-kit's pkcs11.h.
#
#   conformance/tde.sh [--config CKS_TOML] [--threads N] [--tables N] [--iterations N]
#
# --config runs against an existing cks configuration (e.g. a cluster) instead of a fresh
# one-instance keystore; the token is initialised only if it is not yet.
THREADS=8 TABLES=64 ITERATIONS=200
while [ $# -gt 0 ]; do
    case "$1" in
        --config) export CKS_SUITE_CONFIG=$2; shift 2 ;;
        --threads) THREADS=$2; shift 2 ;;
        --tables) TABLES=$2; shift 2 ;;
        --iterations) ITERATIONS=$2; shift 2 ;;
        --module) export MODULE=$2; shift 2 ;;
        *) echo "usage: $0 [--config FILE] [--module PATH] [--threads N] [--tables N] [--iterations N]" >&2; exit 2 ;;
    esac
done
SCENARIO=tde
. "$(dirname "$0")/lib.sh"

need_tool gcc || finish
setup_token || finish
cd "$WORK" || exit 1

P11H=/usr/include/p11-kit-1
if [ ! -r "$P11H/p11-kit/pkcs11.h" ]; then
    fail build "$P11H/p11-kit/pkcs11.h missing (apt-get install libp11-kit-dev)"
    finish
fi
if ! out=$(gcc -O2 -Wall -Werror -I"$P11H" -o tde "$CONF_DIR/tde/tde.c" -ldl -lpthread 2>&1); then
    fail build "gcc failed" "$out"
    finish
fi
pass build

# Counts the C program's PASS/FAIL lines into this scenario's totals.
absorb() {
    local out=$1 rc=$2 what=$3 p f
    printf '%s\n' "$out" | grep -E '^(PASS|FAIL) '
    p=$(printf '%s\n' "$out" | grep -c '^PASS ')
    f=$(printf '%s\n' "$out" | grep -c '^FAIL ')
    N_PASS=$((N_PASS + p))
    N_FAIL=$((N_FAIL + f))
    if [ "$rc" -ne 0 ] && [ "$f" -eq 0 ]; then
        fail "$what" "exited with status $rc" "$(printf '%s\n' "$out" | grep -vE '^(PASS|FAIL) ')"
    fi
}

out=$(timeout 240 ./tde run "$MODULE" "$USER_PIN" state.bin "$THREADS" "$TABLES" "$ITERATIONS" 2>&1)
absorb "$out" $? run

# Other processes (as Oracle's server processes do) find the current master key by label
# and open every table key, concurrently.
if [ -s state.bin ]; then
    pids=()
    for i in 1 2 3; do
        timeout 120 ./tde verify "$MODULE" "$USER_PIN" state.bin "verify-process-$i" >"verify-$i.out" 2>&1 &
        pids+=($!)
    done
    for i in 1 2 3; do
        wait "${pids[$((i - 1))]}"
        absorb "$(cat "verify-$i.out")" $? "verify-process-$i"
    done
fi

finish
