# Common helpers for the cks conformance scenarios. Sourced, not executed.
#
# Environment understood by every scenario:
#   MODULE            PKCS#11 module to test (default: <repo>/target/release/libcks_pkcs11.so)
#   CKS_SUITE_CONFIG  use this existing cks TOML config instead of generating one
#                     (e.g. a cluster config); the token is initialised only if it is not yet
#   KEEP_TMP=1        keep the scenario's temp dir (its path is printed)
#   CKS_SPY=FILE      log every PKCS#11 call (OpenSC pkcs11-spy) to FILE
#
# Output protocol: each check prints exactly one line "PASS name" or "FAIL name: reason";
# a failure may be followed by context lines indented with "    | " (tool output).
# conformance/run counts the PASS/FAIL lines of all scenarios.

set -u

CONF_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO_ROOT=$(dirname "$CONF_DIR")
: "${MODULE:=$REPO_ROOT/target/release/libcks_pkcs11.so}"
case "$MODULE" in /*) ;; *) MODULE="$REPO_ROOT/$MODULE" ;; esac
# CKS_SPY=/path/log: put OpenSC's pkcs11-spy between the tools and the module and log
# every call (with templates and return values) to that file. Debugging aid.
if [ -n "${CKS_SPY:-}" ] && [ -z "${PKCS11SPY:-}" ]; then
    for spy in /usr/lib/x86_64-linux-gnu/pkcs11/pkcs11-spy.so /usr/lib64/pkcs11/pkcs11-spy.so; do
        if [ -e "$spy" ]; then
            export PKCS11SPY="$MODULE" PKCS11SPY_OUTPUT="$CKS_SPY"
            MODULE=$spy
            break
        fi
    done
fi
export MODULE

SO_PIN=12345678
USER_PIN=1234
TOKEN_LABEL=cks-conf
SCENARIO=${SCENARIO:-$(basename "$0" .sh)}

N_PASS=0
N_FAIL=0
BG_PIDS=()

pass() { N_PASS=$((N_PASS + 1)); echo "PASS $SCENARIO/$1"; }

# fail NAME REASON [OUTPUT]
fail() {
    N_FAIL=$((N_FAIL + 1))
    echo "FAIL $SCENARIO/$1: $2"
    if [ $# -ge 3 ] && [ -n "$3" ]; then
        printf '%s\n' "$3" | tail -n "${FAIL_CONTEXT_LINES:-20}" | sed 's/^/    | /'
    fi
}

info() { echo "INFO $SCENARIO: $*"; }

# check NAME SNIPPET: run SNIPPET (bash code, eval'ed in a subshell with the scenario's
# variables); PASS if it exits 0. On failure the last lines of its output are shown.
check() {
    local name=$1 snippet=$2 out rc
    out=$( (eval "$snippet") 2>&1 )
    rc=$?
    if [ $rc -eq 0 ]; then
        pass "$name"
        return 0
    fi
    fail "$name" "$(reason_of "$out" "exit status $rc")" "$out"
    return 1
}

# reason_of OUTPUT DEFAULT: the first line of OUTPUT that looks like an error message.
reason_of() {
    local r
    # (pkcs11-tool's "warning:" lines, e.g. about CKA_ALWAYS_AUTHENTICATE, are no reason.)
    r=$(printf '%s\n' "$1" | grep -v '^warning:' |
        grep -m1 -iE 'error|CKR_|exception|failed|refused|invalid|missing|not found|No such' | cut -c1-200)
    printf '%s' "${r:-$2}"
}

# check_fails NAME SNIPPET: PASS if SNIPPET exits non-zero (an operation that must be refused).
check_fails() {
    local name=$1 snippet=$2 out rc
    out=$( (eval "$snippet") 2>&1 )
    rc=$?
    if [ $rc -ne 0 ]; then
        pass "$name"
        return 0
    fi
    fail "$name" "succeeded but must be refused" "$out"
    return 1
}

need_tool() {
    local t
    for t in "$@"; do
        if ! command -v "$t" >/dev/null 2>&1; then
            fail "tool-$t" "required tool '$t' not found (run conformance/install-deps)"
            return 1
        fi
    done
    return 0
}

is_softhsm() { case "$(basename "${PKCS11SPY:-$MODULE}")" in *softhsm*) return 0 ;; esac; return 1; }

# Port on 127.0.0.1 that nothing listens on.
free_port() {
    python3 - <<'EOF' 2>/dev/null || echo $((20000 + RANDOM % 20000))
import socket
s = socket.socket()
s.bind(("127.0.0.1", 0))
print(s.getsockname()[1])
s.close()
EOF
}

cleanup() {
    local p
    for p in "${BG_PIDS[@]:-}"; do
        [ -n "$p" ] || continue
        kill "$p" 2>/dev/null
        wait "$p" 2>/dev/null
    done
    if [ -n "${WORK:-}" ] && [ -d "$WORK" ]; then
        if [ "${KEEP_TMP:-0}" = 1 ]; then
            echo "INFO $SCENARIO: kept temp dir $WORK"
        else
            rm -rf "$WORK"
        fi
    fi
}

# finish: print the scenario summary (not counted by run) and exit non-zero on failures.
finish() {
    echo "INFO $SCENARIO: $N_PASS passed, $N_FAIL failed"
    [ "$N_FAIL" -eq 0 ]
    exit $?
}

WORK=$(mktemp -d "${TMPDIR:-/tmp}/cks-conf-$SCENARIO.XXXXXX")
trap cleanup EXIT
trap 'exit 130' INT TERM

# Module configuration: a fresh keystore per scenario (or CKS_SUITE_CONFIG), and for
# SoftHSM2 (reference runs) a fresh token directory.
mkdir -p "$WORK/data" "$WORK/softhsm-tokens"
if [ -n "${CKS_SUITE_CONFIG:-}" ]; then
    export CKS_CONFIG="$CKS_SUITE_CONFIG"
else
    cat >"$WORK/cks.toml" <<EOF
[keystore]
label = "$TOKEN_LABEL"
data_dir = "$WORK/data"

[kdf]
memory_kib = 8192
iterations = 1

[[hsm]]
id = "hsm1"
kind = "embedded"
EOF
    export CKS_CONFIG="$WORK/cks.toml"
fi
cat >"$WORK/softhsm2.conf" <<EOF
directories.tokendir = $WORK/softhsm-tokens
objectstore.backend = file
log.level = ERROR
slots.removable = false
EOF
export SOFTHSM2_CONF="$WORK/softhsm2.conf"

P11="pkcs11-tool --module $MODULE"
# Logged-in user session on the (single / first) token.
P11L="pkcs11-tool --module $MODULE --login --pin $USER_PIN"

# setup_token: initialise the token and the user PIN (checks "token-init", "init-pin").
setup_token() {
    if [ ! -r "$MODULE" ]; then
        fail module-present "module $MODULE not found"
        return 1
    fi
    if ! command -v pkcs11-tool >/dev/null 2>&1; then
        fail tool-pkcs11-tool "pkcs11-tool (opensc) not installed; needed to initialise the token"
        return 1
    fi
    local out
    if [ -n "${CKS_SUITE_CONFIG:-}" ] && $P11 -T 2>/dev/null | grep -q 'PIN initialized'; then
        info "token already initialised (CKS_SUITE_CONFIG); not re-initialising"
        return 0
    fi
    if out=$($P11 --init-token --label "$TOKEN_LABEL" --so-pin "$SO_PIN" 2>&1); then
        pass token-init
    else
        fail token-init "pkcs11-tool --init-token failed" "$out"
        return 1
    fi
    if out=$($P11 --login --login-type so --so-pin "$SO_PIN" --init-pin --pin "$USER_PIN" 2>&1); then
        pass init-pin
    else
        fail init-pin "pkcs11-tool --init-pin failed" "$out"
        return 1
    fi
}

# hexid N -> two hex digits
hexid() { printf '%02x' "$1"; }

# ec_pem_from_listing ID OUT.pem: build an EC SubjectPublicKeyInfo from the EC_POINT and
# EC_PARAMS that `pkcs11-tool -O --type pubkey` prints for the public key with CKA_ID=ID.
# (Fallback for pkcs11-tool versions whose --read-object cannot convert every curve.)
ec_pem_from_listing() {
    local id=$1 out=$2 listing point params
    listing=$($P11L -O --type pubkey 2>/dev/null) || return 1
    read -r point params < <(printf '%s\n' "$listing" | awk -v id="$id" '
        /^[A-Z][a-z]+ Key Object/ { if (p != "" && i == id) { print p, e; exit } p = ""; e = ""; i = "" }
        /EC_POINT:/ { p = $2 }
        /EC_PARAMS:/ { e = $2 }
        /^  ID:/ { i = $2 }
        END { if (p != "" && i == id) print p, e }')
    [ -n "${point:-}" ] && [ -n "${params:-}" ] || return 1
    # EC_POINT may be DER-wrapped (04 LEN 04 X Y); strip the OCTET STRING header.
    local n=$(( ${#point} / 2 ))
    if [ "${point:0:2}" = 04 ] && [ $((16#${point:2:2})) -eq $((n - 2)) ]; then
        point=${point:4}
    elif [ "${point:0:4}" = 0481 ] && [ $((16#${point:4:2})) -eq $((n - 3)) ]; then
        point=${point:6}
    fi
    python3 - "$point" "$params" >"$out.der.hex" <<'PY' || return 1
import sys
point, params = bytes.fromhex(sys.argv[1]), bytes.fromhex(sys.argv[2])
def tlv(tag, body):
    n = len(body)
    if n < 128:
        l = bytes([n])
    elif n < 256:
        l = bytes([0x81, n])
    else:
        l = bytes([0x82, n >> 8, n & 0xff])
    return bytes([tag]) + l + body
alg = tlv(0x30, bytes.fromhex("06072a8648ce3d0201") + params)
print(tlv(0x30, alg + tlv(0x03, b"\x00" + point)).hex())
PY
    python3 -c 'import sys; sys.stdout.buffer.write(bytes.fromhex(open(sys.argv[1]).read().strip()))' "$out.der.hex" >"$out.der" &&
        openssl pkey -pubin -inform DER -in "$out.der" -out "$out"
}
