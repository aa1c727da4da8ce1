#!/usr/bin/env bash
# Scenario: Java 17 SunPKCS11 (conformance/java/CksConformance.java, compiled at run time).
SCENARIO=java
. "$(dirname "$0")/lib.sh"

need_tool java javac pkcs11-tool openssl || finish
setup_token || finish
cd "$WORK" || exit 1

# Token objects the Java program expects (see the header of CksConformance.java).
check setup-java-ec-keypair '$P11L --keypairgen --key-type EC:prime256v1 --label java-ec --id 51'
check setup-java-ec-certificate '
    OPENSSL_CONF=/dev/null PKCS11_MODULE_PATH="$MODULE" openssl req -x509 -new -engine pkcs11 -keyform engine \
        -key "pkcs11:object=java-ec;type=private;pin-value='"$USER_PIN"'" -subj "/CN=cks-java" -days 2 -sha256 \
        -outform DER -out java-ec.der &&
    $P11L --write-object java-ec.der --type cert --id 51 --label java-ec'
check setup-java-nocert-keypair '$P11L --keypairgen --key-type EC:prime256v1 --label java-nocert --id 52'
check setup-java-aes '$P11L --keygen --key-type AES:32 --label java-aes --id 53 --sensitive'
check setup-java-hmac '$P11L --keygen --key-type GENERIC:32 --label java-hmac --id 54 --sensitive'

cat >sunpkcs11.cfg <<EOF
name = cks
library = $MODULE
slotListIndex = 0
EOF

mkdir -p classes
if ! out=$(javac -d classes "$CONF_DIR/java/CksConformance.java" 2>&1); then
    fail javac "compilation failed" "$out"
    finish
fi
pass javac

out=$(timeout 280 java -cp classes -Dcks.iterations="${CKS_JAVA_ITERATIONS:-100}" CksConformance sunpkcs11.cfg "$USER_PIN" 2>&1)
rc=$?
printf '%s\n' "$out" | grep -E '^(PASS|FAIL|INFO) ' 
# Java's own PASS/FAIL lines are counted by conformance/run; fold them into this
# scenario's exit status, and report a crash that printed no summary.
jp=$(printf '%s\n' "$out" | grep -c '^PASS ')
jf=$(printf '%s\n' "$out" | grep -c '^FAIL ')
N_PASS=$((N_PASS + jp))
N_FAIL=$((N_FAIL + jf))
if ! printf '%s\n' "$out" | grep -q '^INFO java: .* passed, .* failed'; then
    fail java-run "CksConformance exited with status $rc without a summary" \
        "$(printf '%s\n' "$out" | grep -vE '^(PASS|FAIL|INFO) ')"
elif [ "$jf" -gt 0 ]; then
    # stderr (SunPKCS11 exceptions, stack traces) for the report
    other=$(printf '%s\n' "$out" | grep -vE '^(PASS|FAIL|INFO) ')
    [ -n "$other" ] && printf '%s\n' "$other" | tail -n 30 | sed 's/^/    | /'
fi

finish
