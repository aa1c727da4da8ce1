//! Several processes on one key store, fork(), and encryption at rest.
//!
//! Every test here runs its body in child processes (this binary re-run with
//! `CKS_TEST_CHILD=<step>`), each with its own `C_Initialize`; the parent only
//! orchestrates. No test in this file uses `common::ctx()`.
// The shared `call!` macro (tests/kat_util) expands raw-pointer arguments in `unsafe`.
#![allow(clippy::macro_metavars_in_unsafe)]

mod common;
#[macro_use]
mod kat_util;

use kat_util::{name, Mech, Raw, Tpl, P256_OID};
use pkcs11_sys::*;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

fn step() -> Option<String> {
    std::env::var("CKS_TEST_CHILD").ok()
}

/// A fresh key store: (directory, configuration path).
fn store(extra: &str) -> (PathBuf, PathBuf) {
    let dir = common::tempdir();
    let cfg = common::write_config(&dir, extra);
    (dir, cfg)
}

/// Run `test` as a child at `step` on the key store `cfg`; panics with its output if it fails.
fn child(test: &str, step: &str, cfg: &Path) -> String {
    let (ok, out) = common::run_child(
        test,
        &[
            ("CKS_TEST_CHILD", step),
            ("CKS_CONFIG", cfg.to_str().unwrap()),
        ],
    );
    assert!(
        ok && out.contains("1 passed"),
        "child {test}/{step} failed:\n{out}"
    );
    out
}

fn load() -> Raw {
    let r = Raw::load(&common::module_path());
    r.initialize().unwrap();
    r
}

fn init_token(r: &Raw) {
    let mut label = [b' '; 32];
    label[..common::LABEL.len()].copy_from_slice(common::LABEL.as_bytes());
    let so = common::SO_PIN;
    assert_eq!(
        call!(
            r,
            C_InitToken(
                0,
                so.as_ptr() as *mut u8,
                so.len() as CK_ULONG,
                label.as_mut_ptr()
            )
        ),
        CKR_OK,
        "C_InitToken"
    );
    let s = r.session();
    r.login(s, CKU_SO, so).unwrap();
    init_pin(r, s, common::USER_PIN);
    r.logout(s).unwrap();
    r.close_session(s).unwrap();
}

fn init_pin(r: &Raw, s: CK_SESSION_HANDLE, pin: &str) {
    let rv = call!(
        r,
        C_InitPIN(s, pin.as_ptr() as *mut u8, pin.len() as CK_ULONG)
    );
    assert_eq!(rv, CKR_OK, "C_InitPIN: {}", name(rv));
}

fn user_flags(r: &Raw) -> CK_FLAGS {
    r.token_info().unwrap().flags
        & (CKF_USER_PIN_COUNT_LOW | CKF_USER_PIN_FINAL_TRY | CKF_USER_PIN_LOCKED)
}

// ---- PIN lockout counted across processes ---------------------------------------------------------

const MAX_ATTEMPTS: u32 = 3;

#[test]
fn pin_lockout_is_counted_across_processes() {
    let me = "pin_lockout_is_counted_across_processes";
    let Some(st) = step() else {
        let (_, cfg) = store(&format!("max_pin_attempts = {MAX_ATTEMPTS}"));
        child(me, "init", &cfg);
        // A right PIN resets the count: two wrong, one right, two wrong is not a lock.
        child(me, "wrong", &cfg);
        child(me, "wrong", &cfg);
        child(me, "right", &cfg);
        child(me, "wrong", &cfg);
        child(me, "wrong", &cfg);
        child(me, "right", &cfg);
        // Three wrong PINs in three processes lock the PIN.
        child(me, "wrong", &cfg);
        child(me, "wrong", &cfg);
        child(me, "wrong-locks", &cfg);
        child(me, "locked", &cfg);
        child(me, "so-unlocks", &cfg);
        child(me, "new-pin", &cfg);
        return;
    };
    let r = load();
    match st.as_str() {
        "init" => {
            init_token(&r);
            assert_eq!(user_flags(&r), 0);
        }
        "wrong" | "wrong-locks" => {
            let s = r.session();
            let before = user_flags(&r);
            assert_eq!(before & CKF_USER_PIN_LOCKED, 0, "locked too early");
            let got = r.login(s, CKU_USER, "not-the-pin");
            if st == "wrong-locks" {
                assert_eq!(
                    got.map_err(name),
                    Err(name(CKR_PIN_LOCKED)),
                    "the last allowed wrong PIN locks"
                );
                assert_ne!(
                    user_flags(&r) & CKF_USER_PIN_LOCKED,
                    0,
                    "CKF_USER_PIN_LOCKED after {MAX_ATTEMPTS} failures"
                );
            } else {
                assert_eq!(got.map_err(name), Err(name(CKR_PIN_INCORRECT)));
                let f = user_flags(&r);
                assert_ne!(
                    f & CKF_USER_PIN_COUNT_LOW,
                    0,
                    "CKF_USER_PIN_COUNT_LOW after a failure (flags 0x{f:x})"
                );
                assert_eq!(f & CKF_USER_PIN_LOCKED, 0);
            }
        }
        "right" => {
            let s = r.session();
            r.login(s, CKU_USER, common::USER_PIN).unwrap();
            assert_eq!(user_flags(&r), 0, "a good PIN clears the failure count");
        }
        "locked" => {
            assert_ne!(user_flags(&r) & CKF_USER_PIN_LOCKED, 0);
            let s = r.session();
            let got = r.login(s, CKU_USER, common::USER_PIN);
            assert_eq!(
                got.map_err(name),
                Err(name(CKR_PIN_LOCKED)),
                "even the right PIN is refused"
            );
            // The SO PIN has its own count.
            assert_eq!(r.token_info().unwrap().flags & CKF_SO_PIN_LOCKED, 0);
        }
        "so-unlocks" => {
            let s = r.session();
            r.login(s, CKU_SO, common::SO_PIN).unwrap();
            init_pin(&r, s, "a-new-user-pin");
            r.logout(s).unwrap();
            assert_eq!(user_flags(&r), 0, "C_InitPIN by the SO unlocks");
        }
        "new-pin" => {
            let s = r.session();
            assert_eq!(
                r.login(s, CKU_USER, common::USER_PIN).map_err(name),
                Err(name(CKR_PIN_INCORRECT)),
                "the old PIN is gone"
            );
            r.login(s, CKU_USER, "a-new-user-pin").unwrap();
            assert_eq!(user_flags(&r), 0);
        }
        other => panic!("unknown step {other}"),
    }
    r.finalize().unwrap();
}

// ---- two processes on one store -----------------------------------------------------------------

const SHARED_LABEL: &str = "shared-by-two-processes";
const FROM_B_LABEL: &str = "made-by-process-b";

fn find_label(
    r: &Raw,
    s: CK_SESSION_HANDLE,
    label: &str,
    class: CK_OBJECT_CLASS,
) -> Vec<CK_OBJECT_HANDLE> {
    r.find(s, Tpl::new().class(class).label(label)).unwrap()
}

/// Process A keeps running while process B works on the same store; they talk over
/// A's stdin/stdout.
#[test]
fn two_processes_share_one_store() {
    let me = "two_processes_share_one_store";
    let Some(st) = step() else {
        let (_, cfg) = store("");
        child(me, "init", &cfg);
        let exe = std::env::current_exe().unwrap();
        let mut a = Command::new(exe)
            .args([me, "--exact", "--nocapture", "--test-threads=1"])
            .env("CKS_TEST_CHILD", "A")
            .env("CKS_CONFIG", &cfg)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut a_out = BufReader::new(a.stdout.take().unwrap());
        let mut seen = String::new();
        loop {
            let mut line = String::new();
            assert!(
                a_out.read_line(&mut line).unwrap() > 0,
                "process A ended early:\n{seen}"
            );
            seen.push_str(&line);
            if line.contains("A-READY") {
                break;
            }
        }
        // B finds A's key by label, signs with it, makes its own key and destroys A's.
        child(me, "B", &cfg);
        a.stdin.take().unwrap().write_all(b"go\n").unwrap();
        let mut rest = String::new();
        std::io::Read::read_to_string(&mut a_out, &mut rest).unwrap();
        let status = a.wait().unwrap();
        let mut err = String::new();
        std::io::Read::read_to_string(&mut a.stderr.take().unwrap(), &mut err).unwrap();
        assert!(
            status.success() && rest.contains("1 passed"),
            "process A failed:\n{seen}{rest}{err}"
        );
        return;
    };
    let r = load();
    match st.as_str() {
        "init" => init_token(&r),
        "A" => {
            let s = r.session();
            r.login(s, CKU_USER, common::USER_PIN).unwrap();
            let (public, private) = r
                .generate_key_pair(
                    s,
                    &Mech::new(CKM_EC_KEY_PAIR_GEN),
                    Tpl::new()
                        .bool(CKA_TOKEN, true)
                        .bytes(CKA_EC_PARAMS, P256_OID)
                        .label(SHARED_LABEL),
                    Tpl::new().bool(CKA_TOKEN, true).label(SHARED_LABEL),
                )
                .unwrap();
            assert_eq!(
                find_label(&r, s, SHARED_LABEL, CKO_PRIVATE_KEY),
                vec![private]
            );
            assert!(find_label(&r, s, FROM_B_LABEL, CKO_SECRET_KEY).is_empty());
            let note = r
                .create(
                    s,
                    Tpl::new()
                        .class(CKO_DATA)
                        .bool(CKA_TOKEN, true)
                        .label(SHARED_LABEL)
                        .bytes(CKA_VALUE, b"note"),
                )
                .unwrap();
            assert_eq!(find_label(&r, s, SHARED_LABEL, CKO_DATA), vec![note]);
            println!("A-READY");
            std::io::stdout().flush().unwrap();
            let mut line = String::new();
            std::io::stdin().read_line(&mut line).unwrap();
            // A finds the key B made, and it works here.
            let from_b = find_label(&r, s, FROM_B_LABEL, CKO_SECRET_KEY);
            assert_eq!(
                from_b.len(),
                1,
                "process A does not see process B's new key"
            );
            let mac = r
                .sign(s, &Mech::new(CKM_SHA256_HMAC), from_b[0], b"from A")
                .unwrap();
            r.verify(s, &Mech::new(CKM_SHA256_HMAC), from_b[0], b"from A", &mac)
                .unwrap();
            // B signed with A's private key, then scheduled the key's deletion: the whole
            // key (its public half too) now refuses use, here as well.
            let sig = std::fs::read(std::env::var("CKS_CONFIG").unwrap() + ".sig").unwrap();
            assert_eq!(sig.len(), 64);
            assert_eq!(
                r.verify(
                    s,
                    &Mech::new(CKM_ECDSA_SHA256),
                    public,
                    b"signed by B",
                    &sig,
                )
                .err(),
                Some(CKR_KEY_FUNCTION_NOT_PERMITTED)
            );
            // B destroyed A's data object: gone here too.
            assert!(
                find_label(&r, s, SHARED_LABEL, CKO_DATA).is_empty(),
                "process A still finds the data object B destroyed"
            );
            // B destroyed A's private key: on a customer master key C_DestroyObject
            // schedules deletion (as documented), so here the key is still listed but
            // refuses use within a second.
            let keys = find_label(&r, s, SHARED_LABEL, CKO_PRIVATE_KEY);
            assert_eq!(keys.len(), 1, "the key pending deletion is still listed");
            std::thread::sleep(std::time::Duration::from_millis(700));
            let refused = r.sign(s, &Mech::new(CKM_ECDSA_SHA256), keys[0], b"after");
            assert_eq!(
                refused.err(),
                Some(CKR_KEY_FUNCTION_NOT_PERMITTED),
                "a key pending deletion must refuse use in the other process"
            );
        }
        "B" => {
            let s = r.session();
            r.login(s, CKU_USER, common::USER_PIN).unwrap();
            let keys = find_label(&r, s, SHARED_LABEL, CKO_PRIVATE_KEY);
            assert_eq!(keys.len(), 1, "process B does not see process A's key");
            let sig = r
                .sign(s, &Mech::new(CKM_ECDSA_SHA256), keys[0], b"signed by B")
                .unwrap();
            std::fs::write(std::env::var("CKS_CONFIG").unwrap() + ".sig", &sig).unwrap();
            r.generate_key(
                s,
                &Mech::new(CKM_GENERIC_SECRET_KEY_GEN),
                Tpl::new()
                    .bool(CKA_TOKEN, true)
                    .ulong(CKA_VALUE_LEN, 32)
                    .label(FROM_B_LABEL),
            )
            .unwrap();
            let notes = find_label(&r, s, SHARED_LABEL, CKO_DATA);
            assert_eq!(
                notes.len(),
                1,
                "process B does not see process A's data object"
            );
            r.destroy(s, notes[0]).unwrap();
            r.destroy(s, keys[0]).unwrap();
        }
        other => panic!("unknown step {other}"),
    }
    r.finalize().unwrap();
}

// ---- fork -------------------------------------------------------------------------------------------

#[test]
fn fork_child_reinitialises_parent_unaffected() {
    let me = "fork_child_reinitialises_parent_unaffected";
    let Some(_) = step() else {
        let (_, cfg) = store("");
        child(me, "fork", &cfg);
        return;
    };
    let r = load();
    init_token(&r);
    let s = r.session();
    r.login(s, CKU_USER, common::USER_PIN).unwrap();
    let (public, private) = r
        .generate_key_pair(
            s,
            &Mech::new(CKM_EC_KEY_PAIR_GEN),
            Tpl::new()
                .bool(CKA_TOKEN, true)
                .bytes(CKA_EC_PARAMS, P256_OID),
            Tpl::new().bool(CKA_TOKEN, true).label("fork-key"),
        )
        .unwrap();
    let m = Mech::new(CKM_ECDSA_SHA256);
    r.sign(s, &m, private, b"before fork").unwrap();

    // SAFETY: the child only uses the module and then leaves with _exit.
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0, "fork failed");
    if pid == 0 {
        let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            // SAFETY: plain data.
            let mut info: CK_INFO = unsafe { std::mem::zeroed() };
            let rv = call!(r, C_GetInfo(&mut info));
            assert_eq!(
                rv,
                CKR_CRYPTOKI_NOT_INITIALIZED,
                "C_GetInfo in the child: {}",
                name(rv)
            );
            assert_eq!(r.open_session(true), Err(CKR_CRYPTOKI_NOT_INITIALIZED));
            let mut l: CK_ULONG = 64;
            let mut buf = [0u8; 64];
            let rv = call!(
                r,
                C_Sign(s, b"x".as_ptr() as *mut u8, 1, buf.as_mut_ptr(), &mut l)
            );
            assert_eq!(
                rv,
                CKR_CRYPTOKI_NOT_INITIALIZED,
                "the parent's session in the child: {}",
                name(rv)
            );
            r.initialize().unwrap();
            let cs = r.session();
            r.login(cs, CKU_USER, common::USER_PIN).unwrap();
            let keys = r
                .find(cs, Tpl::new().class(CKO_PRIVATE_KEY).label("fork-key"))
                .unwrap();
            assert_eq!(keys.len(), 1, "the child finds the key");
            let sig = r.sign(cs, &m, keys[0], b"from the child").unwrap();
            std::fs::write(std::env::var("CKS_CONFIG").unwrap() + ".fork-sig", sig).unwrap();
            r.finalize().unwrap();
        }));
        // SAFETY: leave the child without running the parent's atexit handlers or harness.
        unsafe { libc::_exit(if result.is_ok() { 0 } else { 1 }) };
    }
    let mut status = 0;
    // SAFETY: waiting for our own child.
    assert_eq!(unsafe { libc::waitpid(pid, &mut status, 0) }, pid);
    assert!(
        libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
        "forked child failed (status {status})"
    );
    // The parent goes on with its session, login and handles.
    let sig = r.sign(s, &m, private, b"after fork").unwrap();
    r.verify(s, &m, public, b"after fork", &sig).unwrap();
    assert_eq!(
        r.session_info(s).unwrap().state,
        CKS_RW_USER_FUNCTIONS,
        "the parent is still logged in"
    );
    let child_sig = std::fs::read(std::env::var("CKS_CONFIG").unwrap() + ".fork-sig").unwrap();
    r.verify(s, &m, public, b"from the child", &child_sig)
        .unwrap();
    r.finalize().unwrap();
}

// ---- encryption at rest ----------------------------------------------------------------------------

/// Every file under `dir`, recursively.
fn files(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            out.extend(files(&p));
        } else {
            out.push((p.clone(), std::fs::read(&p).unwrap()));
        }
    }
    out
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

/// The key bytes of material: secret values, EC scalars, RSA private exponent and primes.
fn secret_parts(m: &cks_pkcs11::hsm::crypto::KeyMaterial) -> Vec<Vec<u8>> {
    use cks_pkcs11::hsm::crypto::{EcPrivate, KeyMaterial};
    use rsa::traits::PrivateKeyParts;
    match m {
        KeyMaterial::Secret(v) => vec![v.to_vec()],
        KeyMaterial::EcPrivate(EcPrivate::P256(k)) => vec![k.to_bytes().to_vec()],
        KeyMaterial::EcPrivate(EcPrivate::P384(k)) => vec![k.to_bytes().to_vec()],
        KeyMaterial::RsaPrivate(k) => {
            let mut v = vec![k.d().to_bytes_be()];
            v.extend(k.primes().iter().map(|p| p.to_bytes_be()));
            v
        }
        _ => vec![],
    }
}

/// Generate token keys through the module, then open the store with the crate itself
/// and the PIN, unseal every key, and check that no 16-byte piece of any key (nor a
/// PIN) appears in any file of the key store.
#[test]
fn files_at_rest_reveal_no_key_bytes() {
    let me = "files_at_rest_reveal_no_key_bytes";
    let Some(_) = step() else {
        let (_, cfg) = store("");
        child(me, "at-rest", &cfg);
        return;
    };
    let cfg_path = PathBuf::from(std::env::var("CKS_CONFIG").unwrap());
    let r = load();
    init_token(&r);
    let s = r.session();
    r.login(s, CKU_USER, common::USER_PIN).unwrap();
    let gen = |m: CK_MECHANISM_TYPE, len: CK_ULONG| {
        r.generate_key(
            s,
            &Mech::new(m),
            Tpl::new().bool(CKA_TOKEN, true).ulong(CKA_VALUE_LEN, len),
        )
        .unwrap()
    };
    gen(CKM_AES_KEY_GEN, 32);
    gen(CKM_AES_KEY_GEN, 16);
    gen(CKM_GENERIC_SECRET_KEY_GEN, 64);
    let (ec_pub, _) = r
        .generate_key_pair(
            s,
            &Mech::new(CKM_EC_KEY_PAIR_GEN),
            Tpl::new()
                .bool(CKA_TOKEN, true)
                .bytes(CKA_EC_PARAMS, P256_OID),
            Tpl::new().bool(CKA_TOKEN, true),
        )
        .unwrap();
    r.generate_key_pair(
        s,
        &Mech::new(CKM_EC_KEY_PAIR_GEN),
        Tpl::new()
            .bool(CKA_TOKEN, true)
            .bytes(CKA_EC_PARAMS, kat_util::P384_OID),
        Tpl::new().bool(CKA_TOKEN, true),
    )
    .unwrap();
    r.generate_key_pair(
        s,
        &Mech::new(CKM_RSA_PKCS_KEY_PAIR_GEN),
        Tpl::new()
            .bool(CKA_TOKEN, true)
            .ulong(CKA_MODULUS_BITS, 2048),
        Tpl::new().bool(CKA_TOKEN, true),
    )
    .unwrap();
    let point_attr = r.attr(s, ec_pub, CKA_EC_POINT).unwrap();
    let public_point = kat_util::parse_octet_string(&point_attr).unwrap().to_vec();
    // A session key with a known value: session keys are never written anywhere.
    let session_value = [0xc3u8; 32];
    r.aes_key(s, &session_value).unwrap();
    r.finalize().unwrap();

    // Open the key store with the crate's own code and the PIN; unseal every key.
    let cfg = cks_pkcs11::config::Config::from_file(&cfg_path).expect("configuration");
    let ks = cks_pkcs11::keystore::KeyStore::open(&cfg).expect("open the key store");
    let stored = ks.cluster.load_objects().unwrap();
    let sealed: Vec<_> = stored.iter().filter(|o| o.sealed).collect();
    assert_eq!(
        sealed.len(),
        6,
        "six secret/private token keys are stored sealed"
    );
    assert!(
        ks.cluster.material(sealed[0].uid).is_err(),
        "material is unreadable before login"
    );
    assert!(ks
        .login(cks_pkcs11::hsm::embedded::PinUser::User, b"wrong-pin")
        .is_err());
    ks.login(
        cks_pkcs11::hsm::embedded::PinUser::User,
        common::USER_PIN.as_bytes(),
    )
    .expect("login with the user PIN");
    let mut secrets = Vec::new();
    for o in &sealed {
        let m = ks.cluster.material(o.uid).expect("unseal");
        let parts = secret_parts(&m);
        assert!(!parts.is_empty(), "no key bytes for {o:?}");
        secrets.extend(parts);
    }
    drop(ks);

    let data_dir = cfg.data_dir();
    let all = files(&data_dir);
    assert!(
        all.iter()
            .any(|(p, _)| p.to_string_lossy().contains("instance.db")),
        "no instance database under {}",
        data_dir.display()
    );
    // The scan itself works: the public point (stored in clear, as it may be) is found.
    assert!(
        all.iter().any(|(_, d)| contains(d, &public_point)),
        "the scan does not even find the public EC point; it proves nothing"
    );
    let mut leaks = Vec::new();
    for (path, data) in &all {
        for pin in [common::USER_PIN, common::SO_PIN] {
            if contains(data, pin.as_bytes()) {
                leaks.push(format!("{}: a PIN in clear", path.display()));
            }
        }
        if contains(data, &session_value) {
            leaks.push(format!("{}: a session key's value", path.display()));
        }
        let pieces: std::collections::HashSet<&[u8]> = data.windows(16).collect();
        for (i, secret) in secrets.iter().enumerate() {
            assert!(
                secret.len() >= 16,
                "key #{i} shorter than the 16-byte probe"
            );
            if secret.windows(16).any(|w| pieces.contains(w)) {
                leaks.push(format!(
                    "{}: bytes of key #{i} ({} bytes)",
                    path.display(),
                    secret.len()
                ));
            }
        }
    }
    assert!(
        leaks.is_empty(),
        "key material at rest in clear:\n{}",
        leaks.join("\n")
    );
}
