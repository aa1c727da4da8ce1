#!/usr/bin/env bash
# Scenario: GnuTLS p11tool / certtool (gnutls-bin) with --provider pointing at the module.
SCENARIO=p11tool
. "$(dirname "$0")/lib.sh"

need_tool p11tool certtool openssl || finish
setup_token || finish
cd "$WORK" || exit 1

export GNUTLS_PIN=$USER_PIN GNUTLS_SO_PIN=$SO_PIN
PT="p11tool --provider $MODULE"
U="pkcs11:token=$TOKEN_LABEL"

check list-tokens '
    out=$($PT --list-tokens 2>&1); echo "$out"
    echo "$out" | grep -q "Label: '"$TOKEN_LABEL"'" && echo "$out" | grep -q "URL: pkcs11:.*token='"$TOKEN_LABEL"'"'
check list-token-urls '$PT --list-token-urls | grep -q "token='"$TOKEN_LABEL"'"'
check list-mechanisms '
    out=$($PT --list-mechanisms "$U" 2>&1); echo "$out"
    for m in "CKM_ECDSA " "CKM_RSA_PKCS " "CKM_RSA_PKCS_PSS " "CKM_EC(DSA)?_KEY_PAIR_GEN " "CKM_RSA_PKCS_KEY_PAIR_GEN "; do
        echo "$out" | grep -qE "\] $m" || { echo "missing $m"; exit 1; }
    done'

check generate-privkey-ecdsa '$PT --login --generate-privkey ECDSA --label gt-ec --outfile gt-ec.pub "$U" && grep -q "BEGIN PUBLIC KEY" gt-ec.pub'
check generate-privkey-ecdsa-p384 '$PT --login --generate-privkey ECDSA --curve secp384r1 --label gt-ec384 --outfile gt-ec384.pub "$U"'
check generate-privkey-rsa2048 '$PT --login --generate-privkey RSA --bits 2048 --label gt-rsa --outfile gt-rsa.pub "$U"'

check list-all-public '
    out=$($PT --list-all "$U" 2>&1); echo "$out"
    echo "$out" | grep -q "object=gt-ec;type=public" && echo "$out" | grep -q "object=gt-rsa;type=public"'
check list-all-login-private-flags '
    out=$($PT --login --list-all "$U" 2>&1); echo "$out"
    block=$(echo "$out" | grep -A4 "object=gt-ec;type=private")
    echo "$block" | grep -q "CKA_SENSITIVE" && echo "$block" | grep -q "CKA_NEVER_EXTRACTABLE" &&
    ! echo "$block" | grep -q "CKA_EXTRACTABLE"'
check list-privkeys '$PT --login --list-privkeys "$U" | grep -q "object=gt-rsa;type=private"'

for k in gt-ec gt-ec384 gt-rsa; do
    check "test-sign-$k" '
        out=$($PT --login --test-sign "$U;object='"$k"'" 2>&1); rc=$?; echo "$out"
        [ $rc -eq 0 ] && ! echo "$out" | grep -qi "failed"'
done

check export-pubkey-matches-generated '
    $PT --login --export-pubkey "$U;object=gt-ec;type=public" --outfile gt-ec.exported.pub &&
    openssl pkey -pubin -in gt-ec.exported.pub -outform DER >a.der && openssl pkey -pubin -in gt-ec.pub -outform DER >b.der && cmp a.der b.der'

cat >cert.tmpl <<EOF
cn = cks-gnutls
expiration_days = 2
signing_key
tls_www_server
EOF
for k in gt-ec gt-rsa; do
    check "certtool-self-signed-$k" '
        certtool --provider "$MODULE" --generate-self-signed --load-privkey "$U;object='"$k"';type=private" \
            --template cert.tmpl --outfile '"$k"'.crt &&
        openssl verify -CAfile '"$k"'.crt '"$k"'.crt'
    check "write-certificate-$k" '
        $PT --login --write --load-certificate '"$k"'.crt --label '"$k"' "$U" &&
        out=$($PT --list-all-certs "$U" 2>&1) && echo "$out" && echo "$out" | grep -q "object='"$k"';type=cert"'
    # p11tool gives the certificate the CKA_ID of the matching public key: the key and
    # the certificate must be found under one id.
    check "certificate-id-matches-key-$k" '
        out=$($PT --login --list-all "$U;object='"$k"'" 2>&1); echo "$out"
        ids=$(echo "$out" | sed -n "s/^[[:space:]]*ID: //p" | sort -u); echo "ids: $ids"
        [ -n "$ids" ] && [ $(echo "$ids" | wc -l) -eq 1 ] &&
        echo "$out" | grep -q "type=cert" && echo "$out" | grep -q "type=private"'
    check "export-certificate-$k" '
        $PT --export "$U;object='"$k"';type=cert" --outfile '"$k"'.exported.crt &&
        openssl x509 -in '"$k"'.crt -outform DER >c1.der && openssl x509 -in '"$k"'.exported.crt -outform DER >c2.der && cmp c1.der c2.der'
done

check delete-certificate '
    $PT --login --batch --delete "$U;object=gt-rsa;type=cert" &&
    ! $PT --list-all-certs "$U" 2>&1 | grep -q "object=gt-rsa;type=cert"'
check key-survives-certificate-delete '$PT --login --test-sign "$U;object=gt-rsa"'

finish
