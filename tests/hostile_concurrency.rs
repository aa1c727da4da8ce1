//! Concurrency (issue 9): many threads for a bounded time, sharing and not sharing
//! sessions, mixing encryption, decryption, signatures, verification, digests, searches,
//! key generation and destruction, and a thread opening and closing sessions. No
//! deadlock (a watchdog ends the process), no wrong result, no error the spec does not
//! allow. And: thousands of sessions opened and closed, memory returns.

mod common;
#[macro_use]
mod hostile_support;

use hostile_support::*;
use pkcs11_sys::*;
use sha2::Digest;
use std::ptr::null_mut;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The two tests measure memory and time: they run one at a time.
static SERIAL: Mutex<()> = Mutex::new(());

const RUN_FOR: Duration = Duration::from_secs(5);
const WATCHDOG: Duration = Duration::from_secs(60);

/// Kill the whole process if `done` is not set in time: a deadlock must fail, not hang.
fn watchdog(done: Arc<AtomicBool>, what: &'static str) {
    std::thread::spawn(move || {
        let start = Instant::now();
        while start.elapsed() < WATCHDOG {
            if done.load(Ordering::Relaxed) {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        eprintln!("WATCHDOG: {what} did not finish within {WATCHDOG:?}: deadlock?");
        std::process::exit(101);
    });
}

struct Keys {
    aes_token: CK_OBJECT_HANDLE,
    aes_session: CK_OBJECT_HANDLE,
    ec_priv: CK_OBJECT_HANDLE,
    ec_pub: CK_OBJECT_HANDLE,
    hmac: CK_OBJECT_HANDLE,
}

type Errors = Arc<Mutex<Vec<String>>>;

fn note(errors: &Errors, msg: String) {
    let mut e = errors.lock().unwrap();
    if e.len() < 50 {
        e.push(msg);
    }
}

fn encrypt_decrypt_round(
    f: &CK_FUNCTION_LIST,
    s: CK_SESSION_HANDLE,
    key: CK_OBJECT_HANDLE,
    i: u64,
) -> Result<(), String> {
    let mut iv = [0u8; 16];
    iv[..8].copy_from_slice(&i.to_le_bytes());
    let plain: Vec<u8> = (0..(i % 97) as u8).collect();
    let mut m = mech_with(CKM_AES_CBC_PAD, &mut iv);
    let rv = call!(f, C_EncryptInit, s, &mut m, key);
    if rv != CKR_OK {
        return Err(format!("C_EncryptInit: {}", rv_name(rv)));
    }
    let (rv, ct) = crypt(f, s, true, &plain);
    if rv != CKR_OK {
        return Err(format!("C_Encrypt: {}", rv_name(rv)));
    }
    let mut m = mech_with(CKM_AES_CBC_PAD, &mut iv);
    let rv = call!(f, C_DecryptInit, s, &mut m, key);
    if rv != CKR_OK {
        return Err(format!("C_DecryptInit: {}", rv_name(rv)));
    }
    let (rv, back) = crypt(f, s, false, &ct);
    if rv != CKR_OK {
        return Err(format!("C_Decrypt: {}", rv_name(rv)));
    }
    if back != plain {
        return Err("decrypt(encrypt(x)) != x".into());
    }
    Ok(())
}

fn sign_verify_round(
    f: &CK_FUNCTION_LIST,
    s: CK_SESSION_HANDLE,
    m: CK_MECHANISM_TYPE,
    sk: CK_OBJECT_HANDLE,
    pk: CK_OBJECT_HANDLE,
    i: u64,
) -> Result<(), String> {
    let data = i.to_le_bytes().repeat(5);
    let mut mm = mech(m);
    let rv = call!(f, C_SignInit, s, &mut mm, sk);
    if rv != CKR_OK {
        return Err(format!("C_SignInit: {}", rv_name(rv)));
    }
    let (rv, mut sig) = sign(f, s, &data);
    if rv != CKR_OK {
        return Err(format!("C_Sign: {}", rv_name(rv)));
    }
    for (tamper, want) in [(false, CKR_OK), (true, CKR_SIGNATURE_INVALID)] {
        let mut d = data.clone();
        if tamper {
            d[0] ^= 1;
        }
        let rv = call!(f, C_VerifyInit, s, &mut mm, pk);
        if rv != CKR_OK {
            return Err(format!("C_VerifyInit: {}", rv_name(rv)));
        }
        let rv = call!(
            f,
            C_Verify,
            s,
            d.as_mut_ptr(),
            d.len() as CK_ULONG,
            sig.as_mut_ptr(),
            sig.len() as CK_ULONG
        );
        if rv != want {
            return Err(format!(
                "C_Verify (tampered: {tamper}): {} expected {}",
                rv_name(rv),
                rv_name(want)
            ));
        }
    }
    Ok(())
}

fn digest_round(f: &CK_FUNCTION_LIST, s: CK_SESSION_HANDLE, i: u64) -> Result<(), String> {
    let data = i.to_be_bytes().repeat((i % 50) as usize + 1);
    let mut m = mech(CKM_SHA256);
    let rv = call!(f, C_DigestInit, s, &mut m);
    if rv != CKR_OK {
        return Err(format!("C_DigestInit: {}", rv_name(rv)));
    }
    let mut out = [0u8; 32];
    let mut l: CK_ULONG = 32;
    let rv = call!(
        f,
        C_Digest,
        s,
        data.as_ptr() as CK_BYTE_PTR,
        data.len() as CK_ULONG,
        out.as_mut_ptr(),
        &mut l
    );
    if rv != CKR_OK {
        return Err(format!("C_Digest: {}", rv_name(rv)));
    }
    if out[..] != sha2::Sha256::digest(&data)[..] {
        return Err("wrong SHA-256".into());
    }
    Ok(())
}

fn keygen_find_destroy_round(
    f: &CK_FUNCTION_LIST,
    s: CK_SESSION_HANDLE,
    i: u64,
) -> Result<(), String> {
    let label = format!("conc-{}-{i}", s);
    let (rv, k) = gen_secret(
        f,
        s,
        CKM_AES_KEY_GEN,
        aes_template(false, 16).bytes(CKA_LABEL, label.as_bytes()),
    );
    if rv != CKR_OK {
        return Err(format!("C_GenerateKey: {}", rv_name(rv)));
    }
    encrypt_decrypt_round(f, s, k, i)?;
    let mut t = Tpl::new().bytes(CKA_LABEL, label.as_bytes());
    let rv = call!(f, C_FindObjectsInit, s, t.c(), t.n());
    if rv != CKR_OK {
        return Err(format!("C_FindObjectsInit: {}", rv_name(rv)));
    }
    let mut hs = [0; 4];
    let mut n: CK_ULONG = 0;
    let rv = call!(f, C_FindObjects, s, hs.as_mut_ptr(), 4, &mut n);
    let rv2 = call!(f, C_FindObjectsFinal, s);
    if rv != CKR_OK || rv2 != CKR_OK || n != 1 || hs[0] != k {
        return Err(format!("find: {} {} found {n}", rv_name(rv), rv_name(rv2)));
    }
    let rv = call!(f, C_DestroyObject, s, k);
    if rv != CKR_OK {
        return Err(format!("C_DestroyObject: {}", rv_name(rv)));
    }
    let mut m = mech(CKM_AES_ECB);
    let rv = call!(f, C_EncryptInit, s, &mut m, k);
    if rv != CKR_KEY_HANDLE_INVALID {
        return Err(format!("destroyed key still usable: {}", rv_name(rv)));
    }
    Ok(())
}

/// Calls on a session another thread uses at the same time. Which thread's operation a
/// call lands on is up to the scheduler, so only the codes are checked: the spec allows
/// OPERATION_ACTIVE (the other thread's operation is active) and
/// OPERATION_NOT_INITIALIZED (the other thread finished or cancelled it), and
/// BUFFER_TOO_SMALL when the other thread's output was longer than ours.
fn shared_session_round(
    f: &CK_FUNCTION_LIST,
    s: CK_SESSION_HANDLE,
    k: &Keys,
    sign_side: bool,
    i: u64,
    errors: &Errors,
) {
    const ALLOWED: &[CK_RV] = &[
        CKR_OK,
        CKR_OPERATION_ACTIVE,
        CKR_OPERATION_NOT_INITIALIZED,
        CKR_BUFFER_TOO_SMALL,
    ];
    let mut data = i.to_le_bytes().repeat(4);
    let mut out = [0u8; 256];
    let mut l: CK_ULONG = 256;
    let rvs = if sign_side {
        let mut m = mech(CKM_SHA256_HMAC);
        [
            ("C_SignInit", call!(f, C_SignInit, s, &mut m, k.hmac)),
            (
                "C_Sign",
                call!(
                    f,
                    C_Sign,
                    s,
                    data.as_mut_ptr(),
                    32,
                    out.as_mut_ptr(),
                    &mut l
                ),
            ),
        ]
    } else {
        let mut m = mech(CKM_AES_ECB);
        [
            (
                "C_EncryptInit",
                call!(f, C_EncryptInit, s, &mut m, k.aes_session),
            ),
            (
                "C_Encrypt",
                call!(
                    f,
                    C_Encrypt,
                    s,
                    data.as_mut_ptr(),
                    32,
                    out.as_mut_ptr(),
                    &mut l
                ),
            ),
        ]
    };
    for (name, rv) in rvs {
        if !ALLOWED.contains(&rv) {
            note(errors, format!("shared session {name}: {}", rv_name(rv)));
        }
    }
}

#[test]
fn threads_mixing_operations_for_a_bounded_time() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let f = raw().f;
    let keep = open(f, true);
    let (rv, aes_session) = gen_secret(f, keep, CKM_AES_KEY_GEN, aes_template(false, 32));
    expect_rv("session AES key", rv, CKR_OK);
    let (rv, hmac) = gen_secret(
        f,
        keep,
        CKM_GENERIC_SECRET_KEY_GEN,
        Tpl::new()
            .ulong(CKA_VALUE_LEN, 32)
            .bool(CKA_SIGN, true)
            .bool(CKA_VERIFY, true),
    );
    expect_rv("HMAC key", rv, CKR_OK);
    let (ec_pub, ec_priv) = ec_pair(f, keep, true);
    let keys = Arc::new(Keys {
        aes_token: aes_key(f, keep, true),
        aes_session,
        ec_priv,
        ec_pub,
        hmac,
    });
    let shared = open(f, true);
    let done = Arc::new(AtomicBool::new(false));
    watchdog(done.clone(), "the concurrency run");
    let errors: Errors = Arc::new(Mutex::new(Vec::new()));
    let ops = Arc::new(AtomicU64::new(0));
    let deadline = Instant::now() + RUN_FOR;
    let mut threads = Vec::new();
    for t in 0..9u64 {
        let keys = keys.clone();
        let errors = errors.clone();
        let ops = ops.clone();
        threads.push(std::thread::spawn(move || {
            let own = open(f, true);
            let mut i = t * 1_000_000;
            while Instant::now() < deadline {
                i += 1;
                let r = match t {
                    0 => encrypt_decrypt_round(f, own, keys.aes_token, i),
                    1 => encrypt_decrypt_round(f, own, keys.aes_session, i),
                    2 => sign_verify_round(f, own, CKM_ECDSA_SHA256, keys.ec_priv, keys.ec_pub, i),
                    3 => sign_verify_round(f, own, CKM_SHA256_HMAC, keys.hmac, keys.hmac, i)
                        .and_then(|_| digest_round(f, own, i)),
                    4 => keygen_find_destroy_round(f, own, i),
                    5 => {
                        // Open and close sessions; the others' sessions are unaffected.
                        let s = open(f, i % 2 == 0);
                        let mut info: CK_SESSION_INFO = unsafe { std::mem::zeroed() };
                        let rv = call!(f, C_GetSessionInfo, s, &mut info);
                        let rv2 = call!(f, C_CloseSession, s);
                        if rv != CKR_OK || rv2 != CKR_OK {
                            Err(format!("session churn: {} {}", rv_name(rv), rv_name(rv2)))
                        } else {
                            Ok(())
                        }
                    }
                    6 => digest_round(f, own, i).and_then(|_| {
                        // The token's own view while everything changes.
                        let mut ti: CK_TOKEN_INFO = unsafe { std::mem::zeroed() };
                        match call!(f, C_GetTokenInfo, 0, &mut ti) {
                            CKR_OK => Ok(()),
                            rv => Err(format!("C_GetTokenInfo: {}", rv_name(rv))),
                        }
                    }),
                    7 | 8 => {
                        shared_session_round(f, shared, &keys, t == 7, i, &errors);
                        Ok(())
                    }
                    _ => unreachable!(),
                };
                if let Err(e) = r {
                    note(&errors, format!("thread {t}: {e}"));
                }
                ops.fetch_add(1, Ordering::Relaxed);
            }
            let rv = call!(f, C_CloseSession, own);
            if rv != CKR_OK {
                note(&errors, format!("thread {t}: close: {}", rv_name(rv)));
            }
        }));
    }
    for t in threads {
        t.join().expect("a worker thread panicked");
    }
    done.store(true, Ordering::Relaxed);
    // Leave the shared session idle, whatever the last calls left behind.
    call!(f, C_EncryptInit, shared, null_mut(), keys.aes_session);
    call!(f, C_SignInit, shared, null_mut(), keys.hmac);
    close(f, shared);
    close(f, keep);
    let n = ops.load(Ordering::Relaxed);
    println!("{n} operations in {RUN_FOR:?} on 9 threads");
    let errors = errors.lock().unwrap();
    assert!(
        errors.is_empty(),
        "unexpected results:\n{}",
        errors.join("\n")
    );
    assert!(n > 100, "only {n} operations: the threads barely ran");
}

fn vm_rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("/proc/self/status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS")
}

fn session_count(f: &CK_FUNCTION_LIST) -> CK_ULONG {
    let mut ti: CK_TOKEN_INFO = unsafe { std::mem::zeroed() };
    expect_rv(
        "C_GetTokenInfo",
        call!(f, C_GetTokenInfo, 0, &mut ti),
        CKR_OK,
    );
    ti.ulSessionCount
}

/// 5,000 sessions opened (1,000 at a time, each used once) and closed; the session
/// count and the resident memory come back to where they were.
#[test]
fn thousands_of_sessions_and_memory_returns() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let f = raw().f;
    let done = Arc::new(AtomicBool::new(false));
    watchdog(done.clone(), "the session run");
    let round = |n: usize| {
        let hs: Vec<_> = (0..n).map(|i| open(f, i % 3 != 0)).collect();
        for h in &hs {
            let mut b = [0u8; 16];
            expect_rv(
                "C_GenerateRandom",
                call!(f, C_GenerateRandom, *h, b.as_mut_ptr(), 16),
                CKR_OK,
            );
        }
        for h in hs {
            close(f, h);
        }
    };
    round(1000); // warm up allocator pools
    let count0 = session_count(f);
    let rss0 = vm_rss_kib();
    for _ in 0..5 {
        round(1000);
    }
    let rss1 = vm_rss_kib();
    let count1 = session_count(f);
    done.store(true, Ordering::Relaxed);
    println!("VmRSS {rss0} kB -> {rss1} kB; sessions {count0} -> {count1}");
    assert_eq!(count1, count0, "sessions leaked");
    assert!(
        rss1 < rss0 + 20 * 1024,
        "RSS grew by {} kB",
        rss1.saturating_sub(rss0)
    );
}
