#!/usr/bin/env bash
# Scenario: external HSMs as cluster members (kind = "pkcs11"), done the way the README's
# "External HSMs (pkcs11 members) and remote members (p11-kit)" walk-through does it.
#
# Two SoftHSM2 tokens on this host (soft1, soft2, a private SOFTHSM2_CONF), a third (soft3)
# in its own token directory behind `p11-kit server`, reached through p11-kit-client.so,
# and one embedded instance (hsm1). Checked, with pkcs11-tool against libcks_pkcs11.so as a
# user would:
#   - `cks init` puts the domain key into every pkcs11 member (public, sensitive, not
#     extractable, wrap/unwrap only); the SO PINs are not needed afterwards;
#   - AES (--sensitive) and EC keys made through cks, signatures verified by openssl, an
#     AES-CBC-PAD round trip; `cks hsm list` shows every member healthy with the same keys;
#   - in the backend token the keys are `cks:<uuid>` objects (CKA_ID = the uuid), with
#     CKO_DATA bookkeeping (CKA_APPLICATION "cks"); their values cannot be read and they
#     cannot be wrapped under a key of the user's own;
#   - each external member alone (the others failing) signs (ECDSA) and decrypts (AES-ECB,
#     the AES mode p11-kit's remoting carries; AES-CBC-PAD single- and multi-part for the
#     local ones). soft3 takes key copies as values (accept_plaintext_keys), since that
#     remoting carries no AES key wrap;
#   - a missing module, a wrong token and a wrong PIN: the key store starts degraded, the
#     failures are logged naming the instances, the embedded instance serves;
#   - a TLS server (openssl s_server, libp11 engine) keeps running; the p11-kit server (and
#     the p11-kit-remote processes serving open connections) is killed: pkcs11-tool still
#     signs, the running server still handshakes and notices soft3 down, a key made
#     meanwhile counts; the p11-kit server is restarted: the running process has soft3 back
#     and up to date within seconds, `cks hsm list` shows it healthy with the same keys;
#   - a new member added later (soft4): `cks hsm sync` refuses to seed it without its SO
#     PIN and succeeds with it; then soft4 alone signs and decrypts.
# cks only (SoftHSM has no cluster). Runs as root or not; everything it starts is stopped.
unset CKS_SUITE_CONFIG
SCENARIO=external_hsm
. "$(dirname "$0")/lib.sh"

if is_softhsm; then
    info "skipped: the external-HSM scenario needs cks"
    finish
fi
CKS=${CKS_BIN:-$(dirname "${PKCS11SPY:-$MODULE}")/cks}
[ -x "$CKS" ] || CKS=$REPO_ROOT/target/release/cks
if [ ! -x "$CKS" ]; then
    fail cks-binary "the cks command is not next to the module nor in target/release"
    finish
fi
need_tool pkcs11-tool softhsm2-util p11-kit openssl python3 || finish

SOFTHSM=""
for p in /usr/lib/softhsm/libsofthsm2.so /usr/lib/x86_64-linux-gnu/softhsm/libsofthsm2.so \
         /usr/lib64/pkcs11/libsofthsm2.so /usr/lib/pkcs11/libsofthsm2.so; do
    [ -e "$p" ] && { SOFTHSM=$p; break; }
done
CLIENT=""
for d in "$(pkg-config p11-kit-1 --variable p11_module_path 2>/dev/null)" \
         /usr/lib/x86_64-linux-gnu/pkcs11 /usr/lib64/pkcs11 /usr/lib/pkcs11; do
    [ -n "$d" ] && [ -e "$d/p11-kit-client.so" ] && { CLIENT=$d/p11-kit-client.so; break; }
done
ENGINESDIR=$(openssl version -e | sed -n 's/^ENGINESDIR: "\(.*\)"/\1/p')
[ -n "$SOFTHSM" ] || fail softhsm-module "libsofthsm2.so not found (apt-get install softhsm2)"
[ -n "$CLIENT" ] || fail p11-kit-client-module "p11-kit-client.so not found (apt-get install p11-kit-modules)"
[ -e "$ENGINESDIR/pkcs11.so" ] || fail engine-installed "$ENGINESDIR/pkcs11.so not found (apt-get install libengine-pkcs11-openssl)"
[ "$N_FAIL" -eq 0 ] || finish
cd "$WORK" || exit 1

# Backend tokens: SO PIN and user PIN of every SoftHSM token (not cks's PINs).
BK_SO_PIN=87654321
BK_PIN=5678
DATA=$WORK/data
CFG=$WORK/cks.toml
FAULT=$WORK/hsm1.fault            # test hook: while it exists hsm1 fails every call
SOCK=$WORK/soft3.sock
REMOTE_CONF=$WORK/remote/softhsm2.conf
C="timeout 60 pkcs11-tool --module $MODULE"
CL="$C --login --pin $USER_PIN"
K="timeout 120 $CKS --config $CFG"
SH="timeout 60 pkcs11-tool --module $SOFTHSM"   # the SoftHSM tokens directly (SOFTHSM2_CONF of lib.sh)
R="timeout 60 pkcs11-tool --module $CLIENT"      # soft3 through p11-kit (P11_KIT_SERVER_ADDRESS)
MEMBERS="soft1 soft2 soft3"

# ---------------------------------------------------------------- helpers
# children_of PID: the processes whose parent is PID.
children_of() {
    local s
    for s in /proc/[0-9]*/status; do
        [ "$(sed -n 's/^PPid:[[:space:]]*//p' "$s" 2>/dev/null)" = "$1" ] && { s=${s#/proc/}; echo "${s%/status}"; }
    done
}

SRV=""
start_soft3() {
    rm -f "$SOCK"
    SOFTHSM2_CONF=$REMOTE_CONF p11-kit server -f -n "$SOCK" --provider "$SOFTHSM" "pkcs11:token=soft3" \
        >>"$WORK/p11-kit-server.out" 2>>"$WORK/p11-kit-server.err" </dev/null &
    SRV=$!
    local _
    for _ in $(seq 1 100); do [ -S "$SOCK" ] && return 0; sleep 0.1; done
    return 1
}
# The server, and the p11-kit-remote children it forked for connections still open (they
# outlive the server otherwise): for a running process too the member is gone.
stop_soft3() {
    [ -n "$SRV" ] || return 0
    local kids k st _
    kids=$(children_of "$SRV")
    # The children first, so that the server is still there to reap them.
    # shellcheck disable=SC2086
    [ -n "$kids" ] && kill $kids 2>/dev/null
    for k in $kids; do
        for _ in $(seq 1 20); do
            st=$(sed -n 's/^State:[[:space:]]*\(.\).*/\1/p' "/proc/$k/status" 2>/dev/null)
            [ -n "$st" ] && [ "$st" != Z ] || break
            sleep 0.05
        done
    done
    sleep 0.1
    kill "$SRV" 2>/dev/null
    wait "$SRV" 2>/dev/null
    SRV=""
    for _ in $(seq 1 50); do [ -S "$SOCK" ] || return 0; sleep 0.1; done
    return 1
}

SSRV=""
stop_tls_server() {
    [ -n "$SSRV" ] || return 0
    kill "$SSRV" 2>/dev/null
    wait "$SSRV" 2>/dev/null
    SSRV=""
}
trap 'stop_tls_server; stop_soft3; cleanup' EXIT

# key_objects PKCS11-TOOL-ARGS...: one line per key object that `-O` lists:
# CLASS <tab> LABEL <tab> ID <tab> USAGE <tab> ACCESS
key_objects() {
    "$@" -O 2>/dev/null | awk '
        function flush() { if (c != "") printf "%s\t%s\t%s\t%s\t%s\n", c, l, i, u, a; c = l = i = u = a = "" }
        /^[A-Z][a-z]+ Key Object/ { flush(); c = $0; next }
        /^[A-Z]/ { flush(); next }
        c == "" { next }
        /^  label:/  { l = $0; sub(/^  label: */, "", l) }
        /^  ID:/     { i = $2 }
        /^  Usage:/  { u = $0; sub(/^  Usage: */, "", u) }
        /^  Access:/ { a = $0; sub(/^  Access: */, "", a) }
        END { flush() }'
}

# domain_key_present PKCS11-TOOL-ARGS...: without login, the token shows an AES-256 secret
# key usable for wrap and unwrap only, sensitive and not extractable (the domain key).
domain_key_present() {
    local objs
    objs=$(key_objects "$@")
    printf '%s\n' "$objs"
    printf '%s\n' "$objs" | awk -F'\t' '
        $1 ~ /^Secret Key Object; AES length 32/ && $4 == "wrap, unwrap" {
            n = split($5, x, ", "); s = 0; e = 0
            for (k = 1; k <= n; k++) { if (x[k] == "sensitive") s = 1; if (x[k] == "extractable") e = 1 }
            if (s && !e) found = 1
        }
        END { exit !found }'
}

# hsm_list_ok CONFIG EXPECT: `cks hsm list --json` with EXPECT, a Python expression over
# rows (the list) and by (id -> row).
hsm_list_ok() {
    local out
    out=$(timeout 120 "$CKS" --config "$1" hsm list --json) || { echo "$out"; return 1; }
    printf '%s\n' "$out" | python3 -c '
import json, sys
rows = json.load(sys.stdin)
by = {r["id"]: r for r in rows}
for r in rows:
    print(r["id"], r["kind"], "healthy" if r["healthy"] else "UNHEALTHY", r["keys"], r["state"])
ok = eval("(" + sys.argv[1] + ")")
sys.exit(0 if ok else 1)' "$2"
}

# alone MEMBER CMD...: run CMD while every other instance fails (hsm1 through its fault
# file, the other pkcs11 members through a wrong PIN in CMD's environment).
alone() {
    local m=$1 o rc env=()
    shift
    for o in $MEMBERS; do
        [ "$o" = "$m" ] || env+=("CKS_${o^^}_PIN=0000")
    done
    touch "$FAULT"
    env "${env[@]}" "$@"
    rc=$?
    rm -f "$FAULT"
    return $rc
}

# metric_of PID METRIC INSTANCE: the value process PID last published.
metric_of() {
    sed -n "s/^$2{instance=\"$3\",pid=\"$1\"} //p" "$DATA/metrics/cks-$1.prom" 2>/dev/null
}
# wait_metric PID METRIC INSTANCE VALUE SECONDS
wait_metric() {
    local _
    for _ in $(seq 1 $(($5 * 10))); do
        [ "$(metric_of "$1" "$2" "$3")" = "$4" ] && return 0
        kill -0 "$1" 2>/dev/null || return 1
        sleep 0.1
    done
    echo "$2{instance=\"$3\"} in process $1: $(metric_of "$1" "$2" "$3") (expected $4)"
    return 1
}

# write_config FILE [SOFT1_MODULE [SOFT2_TOKEN]]
write_config() {
    cat >"$1" <<EOF
[keystore]
label = "$TOKEN_LABEL"
data_dir = "$DATA"

[kdf]
memory_kib = 8192
iterations = 1

[[hsm]]
id = "hsm1"
kind = "embedded"
fault_file = "$FAULT"   # test hook, not in the README

[[hsm]]
id = "soft1"
kind = "pkcs11"
module = "${2:-$SOFTHSM}"
token_label = "soft1"
pin_env = "CKS_SOFT1_PIN"
so_pin_env = "CKS_SOFT1_SO_PIN"

[[hsm]]
id = "soft2"
kind = "pkcs11"
module = "$SOFTHSM"
token_label = "${3:-soft2}"
pin_env = "CKS_SOFT2_PIN"
so_pin_env = "CKS_SOFT2_SO_PIN"

[[hsm]]
id = "soft3"
kind = "pkcs11"
module = "$CLIENT"
token_label = "soft3"
pin_env = "CKS_SOFT3_PIN"
so_pin_env = "CKS_SOFT3_SO_PIN"
max_in_flight = 8
accept_plaintext_keys = true    # p11-kit's remoting carries no AES key wrap
EOF
}

# ---------------------------------------------------------------- 1. the backend tokens
check softhsm-tokens-created '
    softhsm2-util --init-token --free --label soft1 --so-pin $BK_SO_PIN --pin $BK_PIN &&
    softhsm2-util --init-token --free --label soft2 --so-pin $BK_SO_PIN --pin $BK_PIN &&
    $SH -L | grep -q "token label *: *soft1\$" && $SH -L | grep -q "token label *: *soft2\$"'

mkdir -p "$WORK/remote/tokens"
cat >"$REMOTE_CONF" <<EOF
directories.tokendir = $WORK/remote/tokens
objectstore.backend = file
log.level = ERROR
slots.removable = false
EOF
check remote-token-created '
    SOFTHSM2_CONF=$REMOTE_CONF softhsm2-util --init-token --free --label soft3 --so-pin $BK_SO_PIN --pin $BK_PIN'
if start_soft3; then
    pass p11-kit-server-started
else
    fail p11-kit-server-started "no socket $SOCK after 10 s" "$(cat "$WORK/p11-kit-server.err")"
    finish
fi
export P11_KIT_SERVER_ADDRESS="unix:path=$SOCK"
check remote-token-visible-through-client '
    out=$($R -L 2>&1); echo "$out"; echo "$out" | grep -q "token label *: *soft3\$"'

# ---------------------------------------------------------------- 2. cks.toml, PINs, cks init
write_config "$CFG"
export CKS_CONFIG=$CFG
export CKS_SOFT1_PIN=$BK_PIN CKS_SOFT2_PIN=$BK_PIN CKS_SOFT3_PIN=$BK_PIN
export CKS_SOFT1_SO_PIN=$BK_SO_PIN CKS_SOFT2_SO_PIN=$BK_SO_PIN CKS_SOFT3_SO_PIN=$BK_SO_PIN
if ! check cks-init '$K init --label $TOKEN_LABEL --so-pin $SO_PIN --pin $USER_PIN'; then
    finish
fi
# The SO PINs were needed for the domain-key ceremony only.
unset CKS_SOFT1_SO_PIN CKS_SOFT2_SO_PIN CKS_SOFT3_SO_PIN

check domain-key-in-soft1 'domain_key_present $SH --token-label soft1'
check domain-key-in-soft2 'domain_key_present $SH --token-label soft2'
check domain-key-in-soft3 'domain_key_present $R --token-label soft3'
check hsm-list-after-init 'hsm_list_ok "$CFG" "len(rows) == 4 and all(r[\"healthy\"] for r in rows) and
    [by[m][\"kind\"] for m in (\"soft1\", \"soft2\", \"soft3\")] == [\"pkcs11\"] * 3 and by[\"hsm1\"][\"kind\"] == \"embedded\""'

# ---------------------------------------------------------------- 3. keys through cks, as a user would
check token-listed '$C -L | grep -q "token label *: *$TOKEN_LABEL\$"'
check keygen-aes-sensitive '$CL --keygen --key-type AES:32 --sensitive --label data-key --id 10'
check keypairgen-ec-p256 '$CL --keypairgen --key-type EC:prime256v1 --label web --id 01'
check read-public-key '
    $C --read-object --type pubkey --id 01 -o web.der && openssl pkey -pubin -inform DER -in web.der -out web.pem'
head -c 3000 /dev/urandom >msg
check sign-ecdsa-sha256-verified-by-openssl '
    for i in 1 2 3 4; do
        $CL --sign -m ECDSA-SHA256 --id 01 -i msg -o msg.sig --signature-format openssl &&
        openssl dgst -sha256 -verify web.pem -signature msg.sig msg || exit 1
    done'
IV=000102030405060708090a0b0c0d0e0f
head -c 100 /dev/urandom >small
# pkcs11-tool makes one C_Encrypt/C_Decrypt call for inputs under 1 KiB, and
# C_*Update/C_*Final calls for longer ones.
check aes-cbc-pad-round-trip-single-part '
    $CL --encrypt -m AES-CBC-PAD --id 10 --iv $IV -i small -o small.enc &&
    $CL --decrypt -m AES-CBC-PAD --id 10 --iv $IV -i small.enc -o small.dec && cmp small small.dec'
check aes-cbc-pad-round-trip-multi-part '
    $CL --encrypt -m AES-CBC-PAD --id 10 --iv $IV -i msg -o msg.enc &&
    $CL --decrypt -m AES-CBC-PAD --id 10 --iv $IV -i msg.enc -o msg.dec && cmp msg msg.dec'
# AES-ECB is the AES mode that p11-kit's remoting carries (soft3 alone can use it).
head -c 64 /dev/urandom >block64
check aes-ecb-round-trip '
    $CL --encrypt -m AES-ECB --id 10 -i block64 -o block64.enc &&
    $CL --decrypt -m AES-ECB --id 10 -i block64.enc -o block64.dec && cmp block64 block64.dec'
check hsm-list-every-member-holds-the-keys 'hsm_list_ok "$CFG" "len(rows) == 4 and all(r[\"healthy\"] for r in rows) and
    len({r[\"keys\"] for r in rows}) == 1 and rows[0][\"keys\"] >= 2"'

# ---------------------------------------------------------------- 4. what the backend HSM holds
SOFT1L="$SH --token-label soft1 --login --pin $BK_PIN"
# The key objects cks made in soft1: "cks:<uuid>" labels, CKA_ID = the uuid's bytes.
cks_key_objects() {
    key_objects $SOFT1L | awk -F'\t' '$1 ~ /^(Secret|Private) Key Object/ && $2 ~ /^cks:/'
}
backend_keys_labelled() {
    local objs
    objs=$(key_objects $SOFT1L)
    printf '%s\n' "$objs"
    printf '%s\n' "$objs" | awk -F'\t' '
        $1 ~ /^(Secret|Private) Key Object/ &&
        $2 ~ /^cks:[0-9a-f-]+$/ && length($2) == 40 {
            u = substr($2, 5); gsub(/-/, "", u); if (length(u) == 32 && u == tolower($3)) n++
        }
        END { exit !(n >= 2) }'
}
backend_values_unreadable() {
    local objs class label id t
    objs=$(cks_key_objects)
    [ -n "$objs" ] || { echo "no cks: key objects in soft1"; return 1; }
    while IFS=$'\t' read -r class label id _; do
        case "$class" in Secret*) t=secrkey ;; *) t=privkey ;; esac
        rm -f value.out
        # (pkcs11-tool 0.23 reads no private keys at all: it says so and exits 0.)
        if $SOFT1L --read-object --type $t --id "$id" -o value.out >/dev/null 2>&1 && [ $t = secrkey ] ||
           [ -s value.out ]; then
            echo "the value of $label ($t) could be read"
            return 1
        fi
    done <<<"$objs"
}
# A key of the user's own in soft1 (not trusted) cannot wrap any cks key out.
backend_not_wrappable() {
    local ids id out rc=0
    ids=$(cks_key_objects | awk -F'\t' '$1 ~ /^Secret/ { print $3 }')
    [ -n "$ids" ] || { echo "no cks: secret keys in soft1"; return 1; }
    $SOFT1L --keygen --key-type AES:32 --label users-own-key --id ee >/dev/null 2>&1 ||
        { echo "cannot make a key in soft1"; return 1; }
    for id in $ids; do
        rm -f wrapped.out
        if out=$($SOFT1L --wrap -m AES-KEY-WRAP --id ee --application-id "$id" -o wrapped.out 2>&1) ||
           [ -s wrapped.out ] || ! echo "$out" | grep -q "KEY_NOT_WRAPPABLE\|KEY_UNEXTRACTABLE"; then
            echo "$out"
            echo "key $id: wrapping under the user's own key was not refused (CKR_KEY_NOT_WRAPPABLE/UNEXTRACTABLE)"
            rc=1
        fi
    done
    $SOFT1L --delete-object --type secrkey --id ee >/dev/null 2>&1
    return $rc
}
check backend-keys-labelled-cks-uuid backend_keys_labelled
check backend-bookkeeping-data-objects '
    out=$($SOFT1L -O --type data 2>&1); echo "$out" | head -40
    echo "$out" | grep -q "application: *.cks.\$"'
check backend-key-values-unreadable backend_values_unreadable
check backend-keys-not-wrappable-under-own-key backend_not_wrappable

# ---------------------------------------------------------------- 5. each external member alone
# AES-CBC-PAD ciphertexts made by the embedded instance alone (whatever the round trips
# above did), to be decrypted by each member alone.
check cbc-ciphertexts-by-hsm1-alone '
    env CKS_SOFT1_PIN=0000 CKS_SOFT2_PIN=0000 CKS_SOFT3_PIN=0000 \
        $CL --encrypt -m AES-CBC-PAD --id 10 --iv $IV -i small -o small.hsm1.enc &&
    env CKS_SOFT1_PIN=0000 CKS_SOFT2_PIN=0000 CKS_SOFT3_PIN=0000 \
        $CL --encrypt -m AES-CBC-PAD --id 10 --iv $IV -i msg -o msg.hsm1.enc'
# alone_checks MEMBER: the checks of one external member serving alone.
alone_checks() {
    local m=$1
    check "$m-alone-sign-ecdsa" '
        alone '"$m"' $CL --sign -m ECDSA-SHA256 --id 01 -i msg -o '"$m"'.sig --signature-format openssl &&
        openssl dgst -sha256 -verify web.pem -signature '"$m"'.sig msg'
    check "$m-alone-decrypt-aes-ecb" '
        alone '"$m"' $CL --decrypt -m AES-ECB --id 10 -i block64.enc -o '"$m"'.ecb && cmp block64 '"$m"'.ecb'
    # p11-kit's remoting does not carry AES-CBC-PAD: local modules only.
    [ "$m" = soft3 ] && return
    check "$m-alone-decrypt-aes-cbc-pad-single-part" '
        alone '"$m"' $CL --decrypt -m AES-CBC-PAD --id 10 --iv $IV -i small.hsm1.enc -o '"$m"'.small &&
        cmp small '"$m"'.small'
    check "$m-alone-decrypt-aes-cbc-pad-multi-part" '
        alone '"$m"' $CL --decrypt -m AES-CBC-PAD --id 10 --iv $IV -i msg.hsm1.enc -o '"$m"'.msg &&
        cmp msg '"$m"'.msg'
}
for m in $MEMBERS; do
    alone_checks "$m"
done

# ---------------------------------------------------------------- 6. misconfigured members: degraded start
write_config "$WORK/broken.toml" "$WORK/no-such-module.so" no-such-token
check degraded-start-sign-works '
    CKS_CONFIG=$WORK/broken.toml CKS_SOFT3_PIN=0000 CKS_LOG=warn \
        $CL --sign -m ECDSA-SHA256 --id 01 -i msg -o degraded.sig --signature-format openssl 2>degraded.err ||
        { cat degraded.err; exit 1; }
    openssl dgst -sha256 -verify web.pem -signature degraded.sig msg'
for m in soft1 soft2 soft3; do
    check "degraded-start-log-names-$m" 'grep -n "'"$m"'" degraded.err || { cat degraded.err; exit 1; }'
done
check degraded-hsm-list 'CKS_SOFT3_PIN=0000 hsm_list_ok "$WORK/broken.toml" "by[\"hsm1\"][\"healthy\"] and
    not any(by[m][\"healthy\"] for m in (\"soft1\", \"soft2\", \"soft3\"))"'

# ---------------------------------------------------------------- 7. the remote member fails and returns
# A long-running program using the key store: a TLS server whose key is "web".
cat >openssl.cnf <<EOF
openssl_conf = openssl_init
[openssl_init]
engines = engine_section
[engine_section]
pkcs11 = pkcs11_section
[pkcs11_section]
engine_id = pkcs11
dynamic_path = $ENGINESDIR/pkcs11.so
MODULE_PATH = $MODULE
PIN = $USER_PIN
init = 0
EOF
ENG="-engine pkcs11 -keyform engine"
KEYURI="pkcs11:token=$TOKEN_LABEL;object=web;type=private"
PORT=$(free_port)
handshake() {
    local out
    out=$(echo | OPENSSL_CONF=/dev/null timeout 20 openssl s_client -connect "127.0.0.1:$PORT" -CAfile web.crt \
        -verify_return_error -brief 2>&1)
    echo "$out" | grep -q "Verification: OK" || { echo "$out"; tail -5 s_server.log; return 1; }
}
handshakes() { local i; for i in $(seq 1 "$1"); do handshake || return 1; done; }

check tls-certificate-with-token-key '
    OPENSSL_CONF=$WORK/openssl.cnf openssl req -x509 -new $ENG -key "$KEYURI" -subj /CN=web -days 2 -sha256 -out web.crt'
OPENSSL_CONF=$WORK/openssl.cnf openssl s_server $ENG -key "$KEYURI" -cert web.crt \
    -accept "127.0.0.1:$PORT" -www >s_server.log 2>&1 </dev/null &
SSRV=$!
for _ in $(seq 1 200); do grep -q '^ACCEPT' s_server.log && break; kill -0 "$SSRV" 2>/dev/null || break; sleep 0.1; done
check tls-server-handshakes 'handshakes 4'
check tls-server-sees-soft3-healthy 'wait_metric $SSRV cks_hsm_healthy soft3 1 5'

if stop_soft3; then pass p11-kit-server-stopped; else fail p11-kit-server-stopped "socket $SOCK still there"; fi
check soft3-down-pkcs11-tool-signs '
    $CL --sign -m ECDSA-SHA256 --id 01 -i msg -o down.sig --signature-format openssl &&
    openssl dgst -sha256 -verify web.pem -signature down.sig msg'
check soft3-down-running-server-handshakes 'handshakes 6'
check soft3-down-noticed-by-running-server 'wait_metric $SSRV cks_hsm_healthy soft3 0 10'
check soft3-down-hsm-list 'hsm_list_ok "$CFG" "not by[\"soft3\"][\"healthy\"] and
    all(by[m][\"healthy\"] for m in (\"hsm1\", \"soft1\", \"soft2\"))"'
check soft3-down-keygen '$CL --keygen --key-type AES:32 --sensitive --label made-while-soft3-down --id 11'

if start_soft3; then
    pass p11-kit-server-restarted
else
    fail p11-kit-server-restarted "no socket $SOCK after 10 s" "$(cat "$WORK/p11-kit-server.err")"
fi
check soft3-back-in-running-server 'wait_metric $SSRV cks_hsm_healthy soft3 1 20'
check soft3-back-running-server-handshakes 'handshakes 4'
check soft3-back-hsm-list-same-keys 'hsm_list_ok "$CFG" "len(rows) == 4 and all(r[\"healthy\"] for r in rows) and
    len({r[\"keys\"] for r in rows}) == 1 and rows[0][\"keys\"] >= 3"'
check soft3-alone-has-key-made-while-down '
    alone soft3 $CL --encrypt -m AES-ECB --id 11 -i block64 -o late.enc &&
    $CL --decrypt -m AES-ECB --id 11 -i late.enc -o late.dec && cmp block64 late.dec'
stop_tls_server

# ---------------------------------------------------------------- 8. a member added later (soft4)
check soft4-token-created 'softhsm2-util --init-token --free --label soft4 --so-pin $BK_SO_PIN --pin $BK_PIN'
cat >>"$CFG" <<EOF

[[hsm]]
id = "soft4"
kind = "pkcs11"
module = "$SOFTHSM"
token_label = "soft4"
pin_env = "CKS_SOFT4_PIN"
so_pin_env = "CKS_SOFT4_SO_PIN"
EOF
export CKS_SOFT4_PIN=$BK_PIN
MEMBERS="$MEMBERS soft4"
check_fails soft4-sync-without-so-pin-refused 'CKS_PIN=$USER_PIN $K hsm sync'
check soft4-sync-with-so-pin 'CKS_SOFT4_SO_PIN=$BK_SO_PIN CKS_PIN=$USER_PIN $K hsm sync'
check domain-key-in-soft4 'domain_key_present $SH --token-label soft4'
check soft4-hsm-list-same-keys 'hsm_list_ok "$CFG" "len(rows) == 5 and all(r[\"healthy\"] for r in rows) and
    len({r[\"keys\"] for r in rows}) == 1 and by[\"soft4\"][\"kind\"] == \"pkcs11\""'
alone_checks soft4

finish
