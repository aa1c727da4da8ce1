#!/usr/bin/env bash
# Scenario: OpenSSL 3 with the libp11 engine (libengine-pkcs11-openssl): RFC 7512 URIs,
# pkeyutl signatures, a self-signed certificate, and TLS 1.2 / 1.3 servers whose private
# key stays in the token.
SCENARIO=openssl-engine
. "$(dirname "$0")/lib.sh"

need_tool openssl pkcs11-tool || finish
ENGINESDIR=$(openssl version -e | sed -n 's/^ENGINESDIR: "\(.*\)"/\1/p')
ENGINE_SO="$ENGINESDIR/pkcs11.so"
if [ ! -e "$ENGINE_SO" ]; then
    fail engine-installed "$ENGINE_SO not found (apt-get install libengine-pkcs11-openssl)"
    finish
fi
setup_token || finish
cd "$WORK" || exit 1

# openssl.cnf that loads the engine with the module path and the user PIN.
cat >openssl.cnf <<EOF
openssl_conf = openssl_init
[openssl_init]
engines = engine_section
[engine_section]
pkcs11 = pkcs11_section
[pkcs11_section]
engine_id = pkcs11
dynamic_path = $ENGINE_SO
MODULE_PATH = $MODULE
PIN = $USER_PIN
init = 0
EOF
export OPENSSL_CONF="$WORK/openssl.cnf"
ENG="-engine pkcs11 -keyform engine"

head -c 2000 /dev/urandom >data.bin
openssl dgst -sha256 -binary data.bin >data.sha256

check engine-loads 'openssl engine pkcs11 -t | grep -q "\[ available \]"'

check keypairgen-ec-p256 '$P11L --keypairgen --key-type EC:prime256v1 --label ossl-ec --id 41'
check keypairgen-rsa2048 '$P11L --keypairgen --key-type rsa:2048 --label ossl-rsa --id 42'

# Public keys through the engine (type=public) and through pkcs11-tool: must agree.
check engine-load-public-key-ec '
    openssl pkey -engine pkcs11 -inform engine -pubin -in "pkcs11:object=ossl-ec;type=public" -pubout -out ec.pem &&
    $P11 --read-object --type pubkey --id 41 -o ec.p11.der &&
    openssl pkey -pubin -inform DER -in ec.p11.der -outform DER -out ec.p11.der2 &&
    openssl pkey -pubin -in ec.pem -outform DER | cmp - ec.p11.der2'
check engine-load-public-key-rsa '
    openssl pkey -engine pkcs11 -inform engine -pubin -in "pkcs11:id=%42;type=public" -pubout -out rsa.pem &&
    openssl pkey -pubin -in rsa.pem -noout -text | grep -q "Public-Key: (2048 bit)"'
check engine-private-key-pubout '
    openssl pkey -engine pkcs11 -inform engine -in "pkcs11:object=ossl-ec;type=private" -pubout | cmp - ec.pem'

# ---------------------------------------------------------------- pkeyutl signatures
check pkeyutl-sign-ec-by-label '
    openssl pkeyutl $ENG -sign -inkey "pkcs11:object=ossl-ec;type=private" -in data.sha256 -out ec1.sig &&
    openssl pkeyutl -verify -pubin -inkey ec.pem -in data.sha256 -sigfile ec1.sig'
check pkeyutl-sign-ec-by-id '
    openssl pkeyutl $ENG -sign -inkey "pkcs11:id=%41;type=private" -in data.sha256 -out ec2.sig &&
    openssl pkeyutl -verify -pubin -inkey ec.pem -in data.sha256 -sigfile ec2.sig'
check pkeyutl-sign-ec-token-in-uri '
    openssl pkeyutl $ENG -sign -inkey "pkcs11:token='"$TOKEN_LABEL"';object=ossl-ec;type=private" -in data.sha256 -out ec3.sig &&
    openssl pkeyutl -verify -pubin -inkey ec.pem -in data.sha256 -sigfile ec3.sig'
check pkeyutl-sign-rsa-pkcs1 '
    openssl pkeyutl $ENG -sign -inkey "pkcs11:object=ossl-rsa;type=private" -pkeyopt digest:sha256 -in data.sha256 -out rsa1.sig &&
    openssl pkeyutl -verify -pubin -inkey rsa.pem -pkeyopt digest:sha256 -in data.sha256 -sigfile rsa1.sig'
check pkeyutl-sign-rsa-pss '
    openssl pkeyutl $ENG -sign -inkey "pkcs11:id=%42;type=private" -pkeyopt digest:sha256 \
        -pkeyopt rsa_padding_mode:pss -pkeyopt rsa_pss_saltlen:32 -in data.sha256 -out rsa2.sig &&
    openssl pkeyutl -verify -pubin -inkey rsa.pem -pkeyopt digest:sha256 \
        -pkeyopt rsa_padding_mode:pss -pkeyopt rsa_pss_saltlen:32 -in data.sha256 -sigfile rsa2.sig'
check dgst-sign-rsa-sha256 '
    openssl dgst -sha256 $ENG -sign "pkcs11:object=ossl-rsa;type=private" -out rsa3.sig data.bin &&
    openssl dgst -sha256 -verify rsa.pem -signature rsa3.sig data.bin'
check pkeyutl-decrypt-rsa-oaep '
    head -c 48 /dev/urandom >secret.bin &&
    openssl pkeyutl -encrypt -pubin -inkey rsa.pem -pkeyopt rsa_padding_mode:oaep -in secret.bin -out secret.enc &&
    openssl pkeyutl $ENG -decrypt -inkey "pkcs11:object=ossl-rsa;type=private" -pkeyopt rsa_padding_mode:oaep -in secret.enc -out secret.dec &&
    cmp secret.bin secret.dec'

# Module path from PKCS11_MODULE_PATH and the PIN in the URI (no openssl.cnf engine section).
check pkcs11-module-path-env-and-pin-value '
    OPENSSL_CONF=/dev/null PKCS11_MODULE_PATH="$MODULE" openssl pkeyutl -engine pkcs11 -keyform engine -sign \
        -inkey "pkcs11:object=ossl-ec;type=private;pin-value='"$USER_PIN"'" -in data.sha256 -out ec4.sig &&
    openssl pkeyutl -verify -pubin -inkey ec.pem -in data.sha256 -sigfile ec4.sig'
check_fails wrong-pin-in-uri-refused '
    OPENSSL_CONF=/dev/null PKCS11_MODULE_PATH="$MODULE" openssl pkeyutl -engine pkcs11 -keyform engine -sign \
        -inkey "pkcs11:object=ossl-ec;type=private;pin-value=0000" -in data.sha256 -out ec5.sig'

# ---------------------------------------------------------------- certificates
for k in ec:41 rsa:42; do
    name=${k%%:*}; id=${k#*:}
    check "req-x509-self-signed-$name" '
        openssl req -x509 -new $ENG -key "pkcs11:object=ossl-'"$name"';type=private" -subj "/CN=cks-'"$name"'" \
            -days 2 -sha256 -out '"$name"'-cert.pem &&
        openssl verify -CAfile '"$name"'-cert.pem '"$name"'-cert.pem &&
        openssl x509 -in '"$name"'-cert.pem -noout -pubkey | cmp - '"$name"'.pem'
    check "write-cert-to-token-$name" '
        openssl x509 -in '"$name"'-cert.pem -outform DER -out '"$name"'-cert.der &&
        $P11L --write-object '"$name"'-cert.der --type cert --id '"$id"' --label ossl-'"$name"' &&
        $P11 --read-object --type cert --id '"$id"' -o '"$name"'-cert.read.der &&
        cmp '"$name"'-cert.der '"$name"'-cert.read.der &&
        $P11L -O --type cert | grep -A3 "Certificate Object" | grep -q "label: *ossl-'"$name"'"'
done
check private-key-still-usable-after-cert-import '
    openssl pkeyutl $ENG -sign -inkey "pkcs11:object=ossl-ec;type=private" -in data.sha256 -out ec6.sig &&
    openssl pkeyutl -verify -pubin -inkey ec.pem -in data.sha256 -sigfile ec6.sig'

# ---------------------------------------------------------------- TLS servers
# start_server NAME URI CERT -> sets SRV_PORT; records the pid for cleanup
start_server() {
    local name=$1 uri=$2 cert=$3 i
    SRV_PORT=$(free_port)
    openssl s_server $ENG -key "$uri" -cert "$cert" -accept "127.0.0.1:$SRV_PORT" -www \
        >"server-$name.log" 2>&1 </dev/null &
    BG_PIDS+=($!)
    for i in $(seq 1 100); do
        grep -q '^ACCEPT' "server-$name.log" 2>/dev/null && return 0
        kill -0 "${BG_PIDS[-1]}" 2>/dev/null || break
        sleep 0.1
    done
    fail "s_server-$name-start" "s_server did not start" "$(cat "server-$name.log")"
    return 1
}

# handshake NAME PORT CA EXPECT_PROTO EXPECT_SIGTYPE s_client-args...
handshake() {
    local name=$1 port=$2 ca=$3 proto=$4 sigtype=$5 out
    shift 5
    out=$(printf 'GET / HTTP/1.0\r\n\r\n' | timeout 20 openssl s_client -connect "127.0.0.1:$port" \
        -CAfile "$ca" -verify_return_error -brief -ign_eof "$@" 2>&1)
    if printf '%s\n' "$out" | grep -q "Protocol version: $proto" &&
       printf '%s\n' "$out" | grep -q "Verification: OK" &&
       printf '%s\n' "$out" | grep -q "Signature type: $sigtype\$" &&
       printf '%s\n' "$out" | grep -q "HTTP/1.0 200"; then
        pass "$name"
    else
        fail "$name" "handshake did not complete as $proto with $sigtype" "$out"
    fi
}

if start_server ec "pkcs11:object=ossl-ec;type=private" ec-cert.pem; then
    EC_PORT=$SRV_PORT
    handshake s_server-ec-tls1.3 "$EC_PORT" ec-cert.pem TLSv1.3 ECDSA -tls1_3
    handshake s_server-ec-tls1.2 "$EC_PORT" ec-cert.pem TLSv1.2 ECDSA -tls1_2 -cipher ECDHE-ECDSA-AES128-GCM-SHA256
    handshake s_server-ec-tls1.3-again "$EC_PORT" ec-cert.pem TLSv1.3 ECDSA -tls1_3 -sigalgs ecdsa_secp256r1_sha256
fi
if start_server rsa "pkcs11:id=%42;type=private" rsa-cert.pem; then
    RSA_PORT=$SRV_PORT
    handshake s_server-rsa-pss-tls1.3 "$RSA_PORT" rsa-cert.pem TLSv1.3 RSA-PSS -tls1_3 -sigalgs rsa_pss_rsae_sha256
    handshake s_server-rsa-pss-tls1.2 "$RSA_PORT" rsa-cert.pem TLSv1.2 RSA-PSS -tls1_2 -sigalgs rsa_pss_rsae_sha256
    handshake s_server-rsa-pkcs1-tls1.2 "$RSA_PORT" rsa-cert.pem TLSv1.2 RSA -tls1_2 -sigalgs RSA+SHA256
fi
# Several handshakes in a row against one server process (one long-lived module session).
if [ -n "${EC_PORT:-}" ]; then
    check s_server-ec-10-handshakes '
        for i in $(seq 1 10); do
            echo | timeout 20 openssl s_client -connect 127.0.0.1:'"$EC_PORT"' -CAfile ec-cert.pem \
                -verify_return_error -brief 2>&1 | grep -q "Verification: OK" || { echo "handshake $i failed"; exit 1; }
        done'
fi

finish
