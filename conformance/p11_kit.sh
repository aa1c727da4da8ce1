#!/usr/bin/env bash
# Scenario: p11-kit registration (conformance/p11-kit/cks.module), use of the registered
# module through p11-kit (list-modules, p11tool/certtool without --provider,
# p11-kit-proxy.so with pkcs11-tool and an OpenSSL TLS server), and p11-kit remoting
# (p11-kit server + p11-kit-client.so).
#
# p11-kit ignores per-user module configs in processes running as root, so as root this
# scenario re-runs itself as the unprivileged user "nobody" (setpriv) with a temporary
# HOME holding ~/.config/pkcs11/modules/cks.module. Without setpriv, and only when CI=true,
# it installs the registration into the system directory and removes it afterwards.
if [ "$(id -u)" = 0 ] && [ -z "${CKS_P11KIT_DROPPED:-}" ] && [ -z "${CKS_SUITE_CONFIG:-}" ] &&
   command -v setpriv >/dev/null 2>&1; then
    # The module and the scripts must be readable by "nobody" even when the checkout is
    # not (e.g. under /root): run a staged copy.
    here=$(cd "$(dirname "$0")" && pwd)
    mod=${MODULE:-$(dirname "$here")/target/release/libcks_pkcs11.so}
    case "$mod" in /*) ;; *) mod="$(dirname "$here")/$mod" ;; esac
    stage=$(mktemp -d /tmp/cks-conf-p11-kit-stage.XXXXXX)
    mkdir -p "$stage/conformance/p11-kit"
    cp "$here/lib.sh" "$here/p11_kit.sh" "$stage/conformance/"
    cp "$here/p11-kit/cks.module" "$stage/conformance/p11-kit/"
    # (a copy only when needed: two copies of one module in a process can clash)
    if ! setpriv --reuid=65534 --regid=65534 --clear-groups test -r "$mod" 2>/dev/null && [ -r "$mod" ]; then
        cp "$mod" "$stage/$(basename "$mod")"
        mod="$stage/$(basename "$mod")"
    fi
    chmod -R a+rX "$stage"
    CKS_P11KIT_DROPPED=1 MODULE="$mod" setpriv --reuid=65534 --regid=65534 \
        --clear-groups --inh-caps=-all env TMPDIR=/tmp "$stage/conformance/p11_kit.sh" "$@" &
    child=$!
    trap 'kill "$child" 2>/dev/null; wait "$child"; rm -rf "$stage"; exit 130' INT TERM
    wait "$child"
    rc=$?
    rm -rf "$stage"
    exit $rc
fi

SCENARIO=p11-kit
. "$(dirname "$0")/lib.sh"

need_tool p11-kit pkcs11-tool p11tool certtool openssl || finish
MODFILE="$CONF_DIR/p11-kit/cks.module"
LIBDIR=$(pkg-config p11-kit-1 --variable p11_module_path 2>/dev/null || echo /usr/lib/x86_64-linux-gnu/pkcs11)
PROXY=""
for p in /usr/lib/x86_64-linux-gnu/p11-kit-proxy.so /usr/lib64/p11-kit-proxy.so /usr/lib/p11-kit-proxy.so; do
    [ -e "$p" ] && { PROXY=$p; break; }
done
CLIENT="$LIBDIR/p11-kit-client.so"

check module-file-syntax '
    grep -qE "^module: *libcks_pkcs11\.so *$" "$MODFILE" &&
    ! grep -vE "^(#.*|[a-z-]+: *[^ ]*.*|)$" "$MODFILE"'

setup_token || finish
cd "$WORK" || exit 1

# ---------------------------------------------------------------- install the registration
SYS_MODFILE=""
if [ "$(id -u)" != 0 ]; then
    export HOME="$WORK/home" XDG_CONFIG_HOME="$WORK/home/.config"
    mkdir -p "$XDG_CONFIG_HOME/pkcs11/modules"
    sed "s|^module:.*|module: $MODULE|" "$MODFILE" >"$XDG_CONFIG_HOME/pkcs11/modules/cks.module"
    info "registered as $XDG_CONFIG_HOME/pkcs11/modules/cks.module (user config)"
elif [ "${CI:-}" = true ]; then
    SYS_DIR=$(pkg-config p11-kit-1 --variable p11_module_configs 2>/dev/null || echo /usr/share/p11-kit/modules)
    SYS_MODFILE="$SYS_DIR/cks-conformance.module"
    sed "s|^module:.*|module: $MODULE|" "$MODFILE" >"$SYS_MODFILE"
    trap 'rm -f "$SYS_MODFILE"; cleanup' EXIT
    info "registered as $SYS_MODFILE (CI=true, removed at exit)"
else
    fail register-module "running as root without setpriv: p11-kit ignores user configs; rerun with CI=true to use $SYS_DIR"
    finish
fi
MODNAME=$(basename "${SYS_MODFILE:-cks.module}" .module)

check list-modules-shows-cks '
    out=$(p11-kit list-modules 2>&1); echo "$out"
    echo "$out" | grep -q "^'"$MODNAME"': $MODULE\$" &&
    echo "$out" | sed -n "/^'"$MODNAME"':/,/^[^ ]/p" | grep -q "token: '"$TOKEN_LABEL"'"'
check p11tool-without-provider-lists-token '
    out=$(p11tool --list-tokens 2>&1); echo "$out"; echo "$out" | grep -q "Label: '"$TOKEN_LABEL"'"'

export GNUTLS_PIN=$USER_PIN
U="pkcs11:token=$TOKEN_LABEL"
check p11tool-via-p11-kit-generate-and-sign '
    p11tool --login --generate-privkey ECDSA --label kit-ec --outfile kit-ec.pub "$U" &&
    p11tool --login --test-sign "$U;object=kit-ec"'
check certtool-via-p11-kit-self-signed '
    printf "cn = cks-p11-kit\nexpiration_days = 2\nsigning_key\ntls_www_server\n" >cert.tmpl &&
    certtool --generate-self-signed --load-privkey "$U;object=kit-ec;type=private" --template cert.tmpl --outfile kit-ec.crt &&
    openssl verify -CAfile kit-ec.crt kit-ec.crt'

# ---------------------------------------------------------------- p11-kit-proxy.so
if [ -z "$PROXY" ]; then
    fail proxy-present "p11-kit-proxy.so not found"
else
    check proxy-pkcs11-tool-lists-token '
        out=$(pkcs11-tool --module "$PROXY" -L 2>&1); echo "$out"; echo "$out" | grep -q "token label *: *'"$TOKEN_LABEL"'"'
    check proxy-pkcs11-tool-sign '
        head -c 32 /dev/urandom >h.bin &&
        pkcs11-tool --module "$PROXY" --token-label '"$TOKEN_LABEL"' --login --pin "$USER_PIN" --sign -m ECDSA \
            --label kit-ec -i h.bin -o proxy.sig --signature-format openssl &&
        openssl pkeyutl -verify -pubin -inkey kit-ec.pub -in h.bin -sigfile proxy.sig'
    ENGINESDIR=$(openssl version -e | sed -n 's/^ENGINESDIR: "\(.*\)"/\1/p')
    if [ -e "$ENGINESDIR/pkcs11.so" ]; then
        PORT=$(free_port)
        PKCS11_MODULE_PATH="$PROXY" OPENSSL_CONF=/dev/null openssl s_server -engine pkcs11 -keyform engine \
            -key "$U;object=kit-ec;type=private;pin-value=$USER_PIN" -cert kit-ec.crt \
            -accept "127.0.0.1:$PORT" -www >s_server.log 2>&1 </dev/null &
        BG_PIDS+=($!)
        for i in $(seq 1 100); do grep -q '^ACCEPT' s_server.log && break; sleep 0.1; done
        check proxy-openssl-tls-server '
            out=$(echo | timeout 20 openssl s_client -connect 127.0.0.1:'"$PORT"' -CAfile kit-ec.crt -verify_return_error -brief 2>&1)
            echo "$out"; cat s_server.log
            echo "$out" | grep -q "Verification: OK" && echo "$out" | grep -q "Signature type: ECDSA"'
    else
        fail proxy-openssl-tls-server "libp11 engine not installed"
    fi
fi

# ---------------------------------------------------------------- p11-kit server (remoting)
if [ ! -e "$CLIENT" ]; then
    fail remote-client-present "$CLIENT not found"
else
    SOCK="$WORK/p11kit.sock"
    p11-kit server -f -s -n "$SOCK" --provider "$MODULE" "$U" >server.env 2>server.err &
    BG_PIDS+=($!)
    for i in $(seq 1 100); do [ -S "$SOCK" ] && break; sleep 0.1; done
    export P11_KIT_SERVER_ADDRESS="unix:path=$SOCK"
    check remote-server-started '[ -S "$SOCK" ] || { cat server.err; exit 1; }'
    check remote-list-token '
        out=$(pkcs11-tool --module "$CLIENT" -L 2>&1); echo "$out"; echo "$out" | grep -q "token label *: *'"$TOKEN_LABEL"'"'
    check remote-sign-verify '
        head -c 32 /dev/urandom >h2.bin &&
        pkcs11-tool --module "$CLIENT" --login --pin "$USER_PIN" --sign -m ECDSA --label kit-ec -i h2.bin -o remote.sig \
            --signature-format openssl &&
        openssl pkeyutl -verify -pubin -inkey kit-ec.pub -in h2.bin -sigfile remote.sig'
    check remote-keygen-aes '
        pkcs11-tool --module "$CLIENT" --login --pin "$USER_PIN" --keygen --key-type AES:32 --label kit-aes --id 77 --sensitive &&
        pkcs11-tool --module "$CLIENT" --login --pin "$USER_PIN" -O --type secrkey | grep -q "label: *kit-aes"'
fi

finish
