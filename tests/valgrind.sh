#!/usr/bin/env bash
# Memory check of the built module under valgrind memcheck (issue 9; nightly Rust and so
# AddressSanitizer are not available). pkcs11-tool drives whole
# C_Initialize ... C_Finalize cycles against a throwaway key store: list slots,
# initialise the token and the user PIN, generate an EC key pair, sign, and list the
# objects. Fails on any memory error (invalid read/write, use of uninitialised values,
# bad free) and on any *definite* leak whose allocation stack passes through
# libcks_pkcs11; leaks of the host program and its other libraries are reported only.
#   tests/valgrind.sh [path/to/libcks_pkcs11.so]
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
module="${1:-$root/target/release/libcks_pkcs11.so}"
supp="$root/tests/valgrind.supp"
command -v valgrind >/dev/null || { echo "valgrind.sh: valgrind is not installed" >&2; exit 2; }
command -v pkcs11-tool >/dev/null || { echo "valgrind.sh: pkcs11-tool (opensc) is not installed" >&2; exit 2; }
[ -f "$module" ] || (cd "$root" && cargo build --release --lib)
work="$(mktemp -d /tmp/cks-valgrind.XXXXXX)"
trap 'rm -rf "$work"' EXIT
cat > "$work/cks.toml" <<TOML
[keystore]
label = "vg"
data_dir = "$work/data"
[kdf]
memory_kib = 64
iterations = 1

[[hsm]]
id = "hsm1"
kind = "embedded"
TOML
export CKS_CONFIG="$work/cks.toml"
printf 'valgrind sign test' > "$work/data.txt"

so=so-pin-1234
pin=user-pin-1234
steps=(
    "list-slots|-L"
    "init-token|--init-token --label vg --so-pin $so"
    "init-pin|--login --login-type so --so-pin $so --init-pin --pin $pin"
    "keygen|--login --pin $pin --keypairgen --key-type EC:prime256v1 --label vgkey --id 01"
    "sign|--login --pin $pin --sign --mechanism ECDSA-SHA256 --id 01 --input-file $work/data.txt --output-file $work/sig"
    "list-objects|--login --pin $pin -O"
)
status=0
for step in "${steps[@]}"; do
    name="${step%%|*}"
    args="${step#*|}"
    log="$work/$name.vg"
    # shellcheck disable=SC2086
    if ! valgrind --tool=memcheck --error-exitcode=99 --leak-check=full \
        --show-leak-kinds=definite --errors-for-leak-kinds=none \
        --suppressions="$supp" --num-callers=40 --log-file="$log" \
        pkcs11-tool --module "$module" $args >"$work/$name.out" 2>&1; then
        rc=$?
        echo "FAIL $name: pkcs11-tool/valgrind exit $rc"
        cat "$work/$name.out"
        grep -E "Invalid|uninitialised|Mismatched|ERROR SUMMARY" "$log" | head -20 || true
        status=1
        continue
    fi
    errors=$(grep -oE "ERROR SUMMARY: [0-9]+" "$log" | grep -oE "[0-9]+$" || echo "?")
    # Definite-loss records whose stack mentions the module.
    ours=$(awk '/definitely lost in loss record/ {rec=$0; inrec=1; next}
                inrec && /^==[0-9]+== *$/ {if (hit) print rec; inrec=0; hit=0; next}
                inrec && /libcks_pkcs11|cks_pkcs11::/ {hit=1}' "$log" | wc -l)
    total=$(grep -oE "definitely lost: [0-9,]+ bytes" "$log" | head -1 || true)
    echo "ok   $name: memory errors ${errors}, ${total:-definitely lost: 0 bytes} (in libcks_pkcs11: $ours records)"
    if [ "$ours" != "0" ]; then
        awk '/definitely lost in loss record/ {inrec=1} inrec {print} /^==[0-9]+== *$/ {inrec=0}' "$log" | head -80
        status=1
    fi
done
[ -s "$work/sig" ] || { echo "FAIL: no signature was produced"; status=1; }
if [ "$status" = 0 ]; then
    echo "valgrind.sh: no memory errors, no definite leaks in libcks_pkcs11"
fi
exit "$status"
