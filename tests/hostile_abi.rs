//! Hostile callers at the C ABI (issue 9): every function of the `CK_FUNCTION_LIST`
//! (and `C_GetInterfaceList`/`C_GetInterface`) called with NULL pointers, zero and
//! huge lengths, invalid and closed session handles, invalid object handles, truncated
//! and oversized mechanism parameter structs, bad templates and calls out of order.
//! Each case names the exact `CKR_*` PKCS#11 v2.40 gives; where the specification
//! leaves a choice (e.g. which of two wrong arguments is reported first) the case
//! lists the permitted alternatives and says why.
//!
//! The hostility is in the values: a non-NULL pointer here always points to a live
//! buffer at least as long as the length passed with it.

mod common;
#[macro_use]
mod hostile_support;

use hostile_support::*;
use pkcs11_sys::*;
use std::collections::BTreeSet;
use std::ptr::null_mut;

/// The 68 entries of `CK_FUNCTION_LIST` plus the two PKCS#11 3.0 interface functions.
const ALL_FUNCTIONS: &[&str] = &[
    "C_Initialize",
    "C_Finalize",
    "C_GetInfo",
    "C_GetFunctionList",
    "C_GetSlotList",
    "C_GetSlotInfo",
    "C_GetTokenInfo",
    "C_GetMechanismList",
    "C_GetMechanismInfo",
    "C_InitToken",
    "C_InitPIN",
    "C_SetPIN",
    "C_OpenSession",
    "C_CloseSession",
    "C_CloseAllSessions",
    "C_GetSessionInfo",
    "C_GetOperationState",
    "C_SetOperationState",
    "C_Login",
    "C_Logout",
    "C_CreateObject",
    "C_CopyObject",
    "C_DestroyObject",
    "C_GetObjectSize",
    "C_GetAttributeValue",
    "C_SetAttributeValue",
    "C_FindObjectsInit",
    "C_FindObjects",
    "C_FindObjectsFinal",
    "C_EncryptInit",
    "C_Encrypt",
    "C_EncryptUpdate",
    "C_EncryptFinal",
    "C_DecryptInit",
    "C_Decrypt",
    "C_DecryptUpdate",
    "C_DecryptFinal",
    "C_DigestInit",
    "C_Digest",
    "C_DigestUpdate",
    "C_DigestKey",
    "C_DigestFinal",
    "C_SignInit",
    "C_Sign",
    "C_SignUpdate",
    "C_SignFinal",
    "C_SignRecoverInit",
    "C_SignRecover",
    "C_VerifyInit",
    "C_Verify",
    "C_VerifyUpdate",
    "C_VerifyFinal",
    "C_VerifyRecoverInit",
    "C_VerifyRecover",
    "C_DigestEncryptUpdate",
    "C_DecryptDigestUpdate",
    "C_SignEncryptUpdate",
    "C_DecryptVerifyUpdate",
    "C_GenerateKey",
    "C_GenerateKeyPair",
    "C_WrapKey",
    "C_UnwrapKey",
    "C_DeriveKey",
    "C_SeedRandom",
    "C_GenerateRandom",
    "C_GetFunctionStatus",
    "C_CancelFunction",
    "C_WaitForSlotEvent",
    "C_GetInterfaceList",
    "C_GetInterface",
];

/// Objects and handles every case may use. Each case also gets a fresh R/W session.
struct Env {
    f: &'static CK_FUNCTION_LIST,
    lib: &'static libloading::Library,
    ro: CK_SESSION_HANDLE,
    closed: CK_SESSION_HANDLE,
    /// Session AES-256 key: encrypt/decrypt/wrap/unwrap, extractable, not sensitive.
    aes: CK_OBJECT_HANDLE,
    /// Token AES-256 key (a CMK).
    aes_tok: CK_OBJECT_HANDLE,
    /// Session AES key with CKA_ENCRYPT = FALSE.
    noenc: CK_OBJECT_HANDLE,
    ec_pub: CK_OBJECT_HANDLE,
    ec_priv: CK_OBJECT_HANDLE,
    rsa_pub: CK_OBJECT_HANDLE,
    rsa_priv: CK_OBJECT_HANDLE,
    /// Session generic secret for HMAC.
    hmac: CK_OBJECT_HANDLE,
    /// A handle that named a session object which has since been destroyed.
    stale: CK_OBJECT_HANDLE,
}

fn env() -> &'static Env {
    static ENV: std::sync::OnceLock<Env> = std::sync::OnceLock::new();
    ENV.get_or_init(|| {
        let r = raw();
        let f = r.f;
        // Objects live in a session kept open for the whole process.
        let keep = open(f, true);
        let ro = open(f, false);
        let closed = open(f, true);
        close(f, closed);
        let (rv, aes) = gen_secret(
            f,
            keep,
            CKM_AES_KEY_GEN,
            aes_template(false, 32).bool(CKA_SENSITIVE, false),
        );
        expect_rv("session AES key", rv, CKR_OK);
        let aes_tok = aes_key(f, keep, true);
        let (rv, noenc) = gen_secret(
            f,
            keep,
            CKM_AES_KEY_GEN,
            Tpl::new().ulong(CKA_VALUE_LEN, 16).bool(CKA_ENCRYPT, false),
        );
        expect_rv("AES key without CKA_ENCRYPT", rv, CKR_OK);
        let (ec_pub, ec_priv) = ec_pair(f, keep, true);
        let (rsa_pub, rsa_priv) = rsa_pair(f, keep, true);
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
        let stale = aes_key(f, keep, false);
        destroy(f, keep, stale);
        Env {
            f,
            lib: &r.lib,
            ro,
            closed,
            aes,
            aes_tok,
            noenc,
            ec_pub,
            ec_priv,
            rsa_pub,
            rsa_priv,
            hmac,
            stale,
        }
    })
}

type Run = Box<dyn Fn(&Env, CK_SESSION_HANDLE) -> CK_RV>;

struct Case {
    func: &'static str,
    what: &'static str,
    allowed: Vec<CK_RV>,
    run: Run,
}

macro_rules! case {
    ($v:ident, $func:literal, $what:literal, [$($rv:expr),+ $(,)?], |$e:ident, $s:ident| $body:expr) => {
        $v.push(Case {
            func: $func,
            what: $what,
            allowed: vec![$($rv),+],
            #[allow(unused_variables)]
            run: Box::new(move |$e: &Env, $s: CK_SESSION_HANDLE| $body),
        })
    };
}

/// Run a table; every case gets a fresh R/W session (closed afterwards). Returns the
/// functions covered. All failures are collected and reported together.
fn run_table(cases: Vec<Case>) -> BTreeSet<&'static str> {
    let e = env();
    let mut failures = Vec::new();
    let mut covered = BTreeSet::new();
    for c in &cases {
        let s = open(e.f, true);
        let got = (c.run)(e, s);
        let _ = call!(e.f, C_CloseSession, s);
        covered.insert(c.func);
        if !c.allowed.contains(&got) {
            failures.push(format!(
                "{} [{}]: got {} (0x{got:x}), expected {}",
                c.func,
                c.what,
                rv_name(got),
                c.allowed
                    .iter()
                    .map(|r| rv_name(*r))
                    .collect::<Vec<_>>()
                    .join(" or ")
            ));
        } else {
            println!("ok  {} [{}] -> {}", c.func, c.what, rv_name(got));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} cases failed:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
    covered
}

fn ptr<T>(v: &mut T) -> *mut T {
    v as *mut T
}

fn pin_bytes(s: &str) -> Vec<u8> {
    s.as_bytes().to_vec()
}

/// A session handle for every function that takes one: an unknown handle, the
/// invalid handle 0 and a closed session each give `CKR_SESSION_HANDLE_INVALID`.
fn session_cases(v: &mut Vec<Case>) {
    // The functions this module does not support may say so before looking at the
    // session (the spec does not order the checks): CKR_FUNCTION_NOT_SUPPORTED is
    // allowed for those, CKR_FUNCTION_NOT_PARALLEL for the two legacy functions.
    const NS: CK_RV = CKR_FUNCTION_NOT_SUPPORTED;
    const SHI: CK_RV = CKR_SESSION_HANDLE_INVALID;
    type SessFn = fn(&Env, CK_SESSION_HANDLE) -> CK_RV;
    let table: Vec<(&'static str, &[CK_RV], SessFn)> = vec![
        ("C_InitPIN", &[SHI], |e, h| {
            let mut p = pin_bytes("new-user-pin");
            call!(e.f, C_InitPIN, h, p.as_mut_ptr(), p.len() as CK_ULONG)
        }),
        ("C_SetPIN", &[SHI], |e, h| {
            let mut a = pin_bytes("old-pin-xx");
            let mut b = pin_bytes("new-pin-xx");
            call!(e.f, C_SetPIN, h, a.as_mut_ptr(), 10, b.as_mut_ptr(), 10)
        }),
        ("C_CloseSession", &[SHI], |e, h| {
            call!(e.f, C_CloseSession, h)
        }),
        ("C_GetSessionInfo", &[SHI], |e, h| {
            let mut i: CK_SESSION_INFO = unsafe { std::mem::zeroed() };
            call!(e.f, C_GetSessionInfo, h, &mut i)
        }),
        ("C_GetOperationState", &[SHI, NS], |e, h| {
            let mut l: CK_ULONG = 0;
            call!(e.f, C_GetOperationState, h, null_mut(), &mut l)
        }),
        ("C_SetOperationState", &[SHI, NS], |e, h| {
            let mut st = [0u8; 16];
            call!(e.f, C_SetOperationState, h, st.as_mut_ptr(), 16, 0, 0)
        }),
        ("C_Login", &[SHI], |e, h| {
            let mut p = pin_bytes(common::USER_PIN);
            call!(
                e.f,
                C_Login,
                h,
                CKU_USER,
                p.as_mut_ptr(),
                p.len() as CK_ULONG
            )
        }),
        ("C_Logout", &[SHI], |e, h| call!(e.f, C_Logout, h)),
        ("C_CreateObject", &[SHI], |e, h| {
            let mut t = Tpl::new().ulong(CKA_CLASS, CKO_DATA);
            let mut o = 0;
            call!(e.f, C_CreateObject, h, t.c(), t.n(), &mut o)
        }),
        ("C_CopyObject", &[SHI], |e, h| {
            let mut o = 0;
            call!(e.f, C_CopyObject, h, e.aes, null_mut(), 0, &mut o)
        }),
        ("C_DestroyObject", &[SHI], |e, h| {
            call!(e.f, C_DestroyObject, h, e.aes)
        }),
        ("C_GetObjectSize", &[SHI], |e, h| {
            let mut n = 0;
            call!(e.f, C_GetObjectSize, h, e.aes, &mut n)
        }),
        ("C_GetAttributeValue", &[SHI], |e, h| {
            let mut t = Tpl::new().null(CKA_LABEL, 0);
            call!(e.f, C_GetAttributeValue, h, e.aes, t.c(), t.n())
        }),
        ("C_SetAttributeValue", &[SHI], |e, h| {
            let mut t = Tpl::new().bytes(CKA_LABEL, b"x");
            call!(e.f, C_SetAttributeValue, h, e.aes, t.c(), t.n())
        }),
        ("C_FindObjectsInit", &[SHI], |e, h| {
            call!(e.f, C_FindObjectsInit, h, null_mut(), 0)
        }),
        ("C_FindObjects", &[SHI], |e, h| {
            let mut b = [0; 4];
            let mut n = 0;
            call!(e.f, C_FindObjects, h, b.as_mut_ptr(), 4, &mut n)
        }),
        ("C_FindObjectsFinal", &[SHI], |e, h| {
            call!(e.f, C_FindObjectsFinal, h)
        }),
        ("C_EncryptInit", &[SHI], |e, h| {
            let mut m = mech(CKM_AES_ECB);
            call!(e.f, C_EncryptInit, h, &mut m, e.aes)
        }),
        ("C_Encrypt", &[SHI], |e, h| {
            let mut l = 0;
            call!(e.f, C_Encrypt, h, null_mut(), 0, null_mut(), &mut l)
        }),
        ("C_EncryptUpdate", &[SHI], |e, h| {
            let mut l = 0;
            call!(e.f, C_EncryptUpdate, h, null_mut(), 0, null_mut(), &mut l)
        }),
        ("C_EncryptFinal", &[SHI], |e, h| {
            let mut l = 0;
            call!(e.f, C_EncryptFinal, h, null_mut(), &mut l)
        }),
        ("C_DecryptInit", &[SHI], |e, h| {
            let mut m = mech(CKM_AES_ECB);
            call!(e.f, C_DecryptInit, h, &mut m, e.aes)
        }),
        ("C_Decrypt", &[SHI], |e, h| {
            let mut l = 0;
            call!(e.f, C_Decrypt, h, null_mut(), 0, null_mut(), &mut l)
        }),
        ("C_DecryptUpdate", &[SHI], |e, h| {
            let mut l = 0;
            call!(e.f, C_DecryptUpdate, h, null_mut(), 0, null_mut(), &mut l)
        }),
        ("C_DecryptFinal", &[SHI], |e, h| {
            let mut l = 0;
            call!(e.f, C_DecryptFinal, h, null_mut(), &mut l)
        }),
        ("C_DigestInit", &[SHI], |e, h| {
            let mut m = mech(CKM_SHA256);
            call!(e.f, C_DigestInit, h, &mut m)
        }),
        ("C_Digest", &[SHI], |e, h| {
            let mut l = 0;
            call!(e.f, C_Digest, h, null_mut(), 0, null_mut(), &mut l)
        }),
        ("C_DigestUpdate", &[SHI], |e, h| {
            call!(e.f, C_DigestUpdate, h, null_mut(), 0)
        }),
        ("C_DigestKey", &[SHI], |e, h| {
            call!(e.f, C_DigestKey, h, e.aes)
        }),
        ("C_DigestFinal", &[SHI], |e, h| {
            let mut l = 0;
            call!(e.f, C_DigestFinal, h, null_mut(), &mut l)
        }),
        ("C_SignInit", &[SHI], |e, h| {
            let mut m = mech(CKM_SHA256_HMAC);
            call!(e.f, C_SignInit, h, &mut m, e.hmac)
        }),
        ("C_Sign", &[SHI], |e, h| {
            let mut l = 0;
            call!(e.f, C_Sign, h, null_mut(), 0, null_mut(), &mut l)
        }),
        ("C_SignUpdate", &[SHI], |e, h| {
            call!(e.f, C_SignUpdate, h, null_mut(), 0)
        }),
        ("C_SignFinal", &[SHI], |e, h| {
            let mut l = 0;
            call!(e.f, C_SignFinal, h, null_mut(), &mut l)
        }),
        ("C_SignRecoverInit", &[SHI, NS], |e, h| {
            let mut m = mech(CKM_RSA_PKCS);
            call!(e.f, C_SignRecoverInit, h, &mut m, e.rsa_priv)
        }),
        ("C_SignRecover", &[SHI, NS], |e, h| {
            let mut l = 0;
            call!(e.f, C_SignRecover, h, null_mut(), 0, null_mut(), &mut l)
        }),
        ("C_VerifyInit", &[SHI], |e, h| {
            let mut m = mech(CKM_SHA256_HMAC);
            call!(e.f, C_VerifyInit, h, &mut m, e.hmac)
        }),
        ("C_Verify", &[SHI], |e, h| {
            call!(e.f, C_Verify, h, null_mut(), 0, null_mut(), 0)
        }),
        ("C_VerifyUpdate", &[SHI], |e, h| {
            call!(e.f, C_VerifyUpdate, h, null_mut(), 0)
        }),
        ("C_VerifyFinal", &[SHI], |e, h| {
            call!(e.f, C_VerifyFinal, h, null_mut(), 0)
        }),
        ("C_VerifyRecoverInit", &[SHI, NS], |e, h| {
            let mut m = mech(CKM_RSA_PKCS);
            call!(e.f, C_VerifyRecoverInit, h, &mut m, e.rsa_pub)
        }),
        ("C_VerifyRecover", &[SHI, NS], |e, h| {
            let mut l = 0;
            call!(e.f, C_VerifyRecover, h, null_mut(), 0, null_mut(), &mut l)
        }),
        ("C_DigestEncryptUpdate", &[SHI, NS], |e, h| {
            let mut l = 0;
            call!(
                e.f,
                C_DigestEncryptUpdate,
                h,
                null_mut(),
                0,
                null_mut(),
                &mut l
            )
        }),
        ("C_DecryptDigestUpdate", &[SHI, NS], |e, h| {
            let mut l = 0;
            call!(
                e.f,
                C_DecryptDigestUpdate,
                h,
                null_mut(),
                0,
                null_mut(),
                &mut l
            )
        }),
        ("C_SignEncryptUpdate", &[SHI, NS], |e, h| {
            let mut l = 0;
            call!(
                e.f,
                C_SignEncryptUpdate,
                h,
                null_mut(),
                0,
                null_mut(),
                &mut l
            )
        }),
        ("C_DecryptVerifyUpdate", &[SHI, NS], |e, h| {
            let mut l = 0;
            call!(
                e.f,
                C_DecryptVerifyUpdate,
                h,
                null_mut(),
                0,
                null_mut(),
                &mut l
            )
        }),
        ("C_GenerateKey", &[SHI], |e, h| {
            let mut m = mech(CKM_AES_KEY_GEN);
            let mut t = Tpl::new().ulong(CKA_VALUE_LEN, 16);
            let mut o = 0;
            call!(e.f, C_GenerateKey, h, &mut m, t.c(), t.n(), &mut o)
        }),
        ("C_GenerateKeyPair", &[SHI], |e, h| {
            let mut m = mech(CKM_EC_KEY_PAIR_GEN);
            let mut t = Tpl::new().bytes(CKA_EC_PARAMS, P256_OID);
            let (mut a, mut b) = (0, 0);
            call!(
                e.f,
                C_GenerateKeyPair,
                h,
                &mut m,
                t.c(),
                t.n(),
                null_mut(),
                0,
                &mut a,
                &mut b
            )
        }),
        ("C_WrapKey", &[SHI], |e, h| {
            let mut m = mech(CKM_AES_KEY_WRAP_PAD);
            let mut l = 0;
            call!(e.f, C_WrapKey, h, &mut m, e.aes, e.hmac, null_mut(), &mut l)
        }),
        ("C_UnwrapKey", &[SHI], |e, h| {
            let mut m = mech(CKM_AES_KEY_WRAP_PAD);
            let mut w = [0u8; 24];
            let mut t = Tpl::new()
                .ulong(CKA_CLASS, CKO_SECRET_KEY)
                .ulong(CKA_KEY_TYPE, CKK_AES);
            let mut o = 0;
            call!(
                e.f,
                C_UnwrapKey,
                h,
                &mut m,
                e.aes,
                w.as_mut_ptr(),
                24,
                t.c(),
                t.n(),
                &mut o
            )
        }),
        ("C_DeriveKey", &[SHI], |e, h| {
            let mut pt = [4u8; 65];
            let mut pb = ecdh_params(CKD_NULL, &mut [], &mut pt);
            let mut m = mech_with(CKM_ECDH1_DERIVE, &mut pb);
            let mut t = Tpl::new().ulong(CKA_KEY_TYPE, CKK_AES);
            let mut o = 0;
            call!(e.f, C_DeriveKey, h, &mut m, e.ec_priv, t.c(), t.n(), &mut o)
        }),
        (
            "C_SeedRandom",
            &[SHI, CKR_RANDOM_SEED_NOT_SUPPORTED],
            |e, h| {
                let mut b = [0u8; 8];
                call!(e.f, C_SeedRandom, h, b.as_mut_ptr(), 8)
            },
        ),
        ("C_GenerateRandom", &[SHI], |e, h| {
            let mut b = [0u8; 8];
            call!(e.f, C_GenerateRandom, h, b.as_mut_ptr(), 8)
        }),
        (
            "C_GetFunctionStatus",
            &[SHI, CKR_FUNCTION_NOT_PARALLEL],
            |e, h| call!(e.f, C_GetFunctionStatus, h),
        ),
        (
            "C_CancelFunction",
            &[SHI, CKR_FUNCTION_NOT_PARALLEL],
            |e, h| call!(e.f, C_CancelFunction, h),
        ),
    ];
    for (func, allowed, run) in table {
        for (what, which) in [
            ("unknown session handle", 0u8),
            ("CK_INVALID_HANDLE (0)", 1),
            ("closed session", 2),
        ] {
            let allowed = allowed.to_vec();
            v.push(Case {
                func,
                what,
                allowed,
                run: Box::new(move |e: &Env, _s| {
                    let h = match which {
                        0 => BOGUS,
                        1 => 0,
                        _ => e.closed,
                    };
                    run(e, h)
                }),
            });
        }
    }
}

/// Object handles: unknown, 0 and stale (destroyed) handles.
fn object_cases(v: &mut Vec<Case>) {
    const OHI: CK_RV = CKR_OBJECT_HANDLE_INVALID;
    const KHI: CK_RV = CKR_KEY_HANDLE_INVALID;
    type ObjFn = fn(&Env, CK_SESSION_HANDLE, CK_OBJECT_HANDLE) -> CK_RV;
    let table: Vec<(&'static str, &'static str, &[CK_RV], ObjFn)> = vec![
        ("C_CopyObject", "object", &[OHI], |e, s, o| {
            let mut out = 0;
            call!(e.f, C_CopyObject, s, o, null_mut(), 0, &mut out)
        }),
        ("C_DestroyObject", "object", &[OHI], |e, s, o| {
            call!(e.f, C_DestroyObject, s, o)
        }),
        ("C_GetObjectSize", "object", &[OHI], |e, s, o| {
            let mut n = 0;
            call!(e.f, C_GetObjectSize, s, o, &mut n)
        }),
        ("C_GetAttributeValue", "object", &[OHI], |e, s, o| {
            let mut t = Tpl::new().null(CKA_CLASS, 0);
            call!(e.f, C_GetAttributeValue, s, o, t.c(), t.n())
        }),
        ("C_SetAttributeValue", "object", &[OHI], |e, s, o| {
            let mut t = Tpl::new().bytes(CKA_LABEL, b"x");
            call!(e.f, C_SetAttributeValue, s, o, t.c(), t.n())
        }),
        ("C_EncryptInit", "key", &[KHI], |e, s, o| {
            let mut m = mech(CKM_AES_ECB);
            call!(e.f, C_EncryptInit, s, &mut m, o)
        }),
        ("C_DecryptInit", "key", &[KHI], |e, s, o| {
            let mut m = mech(CKM_AES_ECB);
            call!(e.f, C_DecryptInit, s, &mut m, o)
        }),
        ("C_SignInit", "key", &[KHI], |e, s, o| {
            let mut m = mech(CKM_SHA256_HMAC);
            call!(e.f, C_SignInit, s, &mut m, o)
        }),
        ("C_VerifyInit", "key", &[KHI], |e, s, o| {
            let mut m = mech(CKM_SHA256_HMAC);
            call!(e.f, C_VerifyInit, s, &mut m, o)
        }),
        (
            "C_SignRecoverInit",
            "key",
            &[KHI, CKR_FUNCTION_NOT_SUPPORTED],
            |e, s, o| {
                let mut m = mech(CKM_RSA_PKCS);
                call!(e.f, C_SignRecoverInit, s, &mut m, o)
            },
        ),
        (
            "C_VerifyRecoverInit",
            "key",
            &[KHI, CKR_FUNCTION_NOT_SUPPORTED],
            |e, s, o| {
                let mut m = mech(CKM_RSA_PKCS);
                call!(e.f, C_VerifyRecoverInit, s, &mut m, o)
            },
        ),
        ("C_DigestKey", "key (digest active)", &[KHI], |e, s, o| {
            let mut m = mech(CKM_SHA256);
            expect_rv("C_DigestInit", call!(e.f, C_DigestInit, s, &mut m), CKR_OK);
            call!(e.f, C_DigestKey, s, o)
        }),
        // PKCS#11 v2.40 §5.13 C_WrapKey: an invalid hWrappingKey is
        // CKR_WRAPPING_KEY_HANDLE_INVALID; an invalid hKey is CKR_KEY_HANDLE_INVALID.
        (
            "C_WrapKey",
            "wrapping key",
            &[CKR_WRAPPING_KEY_HANDLE_INVALID],
            |e, s, o| {
                let mut m = mech(CKM_AES_KEY_WRAP_PAD);
                let mut l = 0;
                call!(e.f, C_WrapKey, s, &mut m, o, e.hmac, null_mut(), &mut l)
            },
        ),
        ("C_WrapKey", "key to wrap", &[KHI], |e, s, o| {
            let mut m = mech(CKM_AES_KEY_WRAP_PAD);
            let mut l = 0;
            call!(e.f, C_WrapKey, s, &mut m, e.aes, o, null_mut(), &mut l)
        }),
        // §5.13 C_UnwrapKey: an invalid hUnwrappingKey is CKR_UNWRAPPING_KEY_HANDLE_INVALID.
        (
            "C_UnwrapKey",
            "unwrapping key",
            &[CKR_UNWRAPPING_KEY_HANDLE_INVALID],
            |e, s, o| {
                let mut m = mech(CKM_AES_KEY_WRAP_PAD);
                let mut w = [0u8; 24];
                let mut t = Tpl::new()
                    .ulong(CKA_CLASS, CKO_SECRET_KEY)
                    .ulong(CKA_KEY_TYPE, CKK_AES);
                let mut out = 0;
                call!(
                    e.f,
                    C_UnwrapKey,
                    s,
                    &mut m,
                    o,
                    w.as_mut_ptr(),
                    24,
                    t.c(),
                    t.n(),
                    &mut out
                )
            },
        ),
        ("C_DeriveKey", "base key", &[KHI], |e, s, o| {
            let mut pt = [4u8; 65];
            let p = CK_ECDH1_DERIVE_PARAMS {
                kdf: CKD_NULL,
                ulSharedDataLen: 0,
                pSharedData: null_mut(),
                ulPublicDataLen: 65,
                pPublicData: pt.as_mut_ptr(),
            };
            let mut pb = struct_bytes(&p);
            let mut m = mech_with(CKM_ECDH1_DERIVE, &mut pb);
            let mut t = Tpl::new().ulong(CKA_KEY_TYPE, CKK_AES);
            let mut out = 0;
            call!(e.f, C_DeriveKey, s, &mut m, o, t.c(), t.n(), &mut out)
        }),
    ];
    for (func, _role, allowed, run) in table {
        for (what, which) in [
            ("unknown object handle", 0u8),
            ("CK_INVALID_HANDLE (0)", 1),
            ("destroyed object's handle", 2),
        ] {
            v.push(Case {
                func,
                what,
                allowed: allowed.to_vec(),
                run: Box::new(move |e: &Env, s| {
                    let o = match which {
                        0 => BOGUS,
                        1 => 0,
                        _ => e.stale,
                    };
                    run(e, s, o)
                }),
            });
        }
    }
}

/// NULL pointers, zero and huge lengths, bad slots and other argument errors.
fn argument_cases(v: &mut Vec<Case>) {
    const AB: CK_RV = CKR_ARGUMENTS_BAD;
    let label32 = [b' '; 32];

    // --- general purpose ---
    // The library is initialised: a second C_Initialize is ALREADY_INITIALIZED. With a
    // bad argument as well, the spec does not say which error wins.
    case!(
        v,
        "C_Initialize",
        "already initialised",
        [CKR_CRYPTOKI_ALREADY_INITIALIZED],
        |e, s| { call!(e.f, C_Initialize, null_mut()) }
    );
    case!(
        v,
        "C_Initialize",
        "pReserved not NULL",
        [AB, CKR_CRYPTOKI_ALREADY_INITIALIZED],
        |e, s| {
            let mut x = 0u8;
            let mut a: CK_C_INITIALIZE_ARGS = unsafe { std::mem::zeroed() };
            a.pReserved = ptr(&mut x) as CK_VOID_PTR;
            call!(e.f, C_Initialize, ptr(&mut a) as CK_VOID_PTR)
        }
    );
    case!(v, "C_Finalize", "pReserved not NULL", [AB], |e, s| {
        let mut x = 0u8;
        call!(e.f, C_Finalize, ptr(&mut x) as CK_VOID_PTR)
    });
    case!(v, "C_GetInfo", "NULL info", [AB], |e, s| call!(
        e.f,
        C_GetInfo,
        null_mut()
    ));
    case!(v, "C_GetInfo", "valid", [CKR_OK], |e, s| {
        let mut i: CK_INFO = unsafe { std::mem::zeroed() };
        call!(e.f, C_GetInfo, &mut i)
    });
    case!(v, "C_GetFunctionList", "NULL", [AB], |e, s| call!(
        e.f,
        C_GetFunctionList,
        null_mut()
    ));

    // --- slots and tokens ---
    case!(v, "C_GetSlotList", "NULL count", [AB], |e, s| {
        call!(e.f, C_GetSlotList, CK_TRUE, null_mut(), null_mut())
    });
    case!(
        v,
        "C_GetSlotList",
        "count 0 with a list",
        [CKR_BUFFER_TOO_SMALL],
        |e, s| {
            let mut l = [0 as CK_SLOT_ID; 1];
            let mut n: CK_ULONG = 0;
            let rv = call!(e.f, C_GetSlotList, CK_FALSE, l.as_mut_ptr(), &mut n);
            assert_eq!(n, 1, "C_GetSlotList must report the count it needs");
            rv
        }
    );
    case!(
        v,
        "C_GetSlotList",
        "NULL list, huge count",
        [CKR_OK],
        |e, s| {
            let mut n: CK_ULONG = HUGE;
            let rv = call!(e.f, C_GetSlotList, CK_TRUE, null_mut(), &mut n);
            assert_eq!(n, 1);
            rv
        }
    );
    case!(
        v,
        "C_GetSlotInfo",
        "bad slot",
        [CKR_SLOT_ID_INVALID],
        |e, s| {
            let mut i: CK_SLOT_INFO = unsafe { std::mem::zeroed() };
            call!(e.f, C_GetSlotInfo, 99, &mut i)
        }
    );
    case!(v, "C_GetSlotInfo", "NULL info", [AB], |e, s| call!(
        e.f,
        C_GetSlotInfo,
        0,
        null_mut()
    ));
    case!(
        v,
        "C_GetTokenInfo",
        "bad slot",
        [CKR_SLOT_ID_INVALID],
        |e, s| {
            let mut i: CK_TOKEN_INFO = unsafe { std::mem::zeroed() };
            call!(e.f, C_GetTokenInfo, 99, &mut i)
        }
    );
    case!(v, "C_GetTokenInfo", "NULL info", [AB], |e, s| call!(
        e.f,
        C_GetTokenInfo,
        0,
        null_mut()
    ));
    case!(
        v,
        "C_GetMechanismList",
        "bad slot",
        [CKR_SLOT_ID_INVALID],
        |e, s| {
            let mut n = 0;
            call!(e.f, C_GetMechanismList, 99, null_mut(), &mut n)
        }
    );
    case!(v, "C_GetMechanismList", "NULL count", [AB], |e, s| {
        call!(e.f, C_GetMechanismList, 0, null_mut(), null_mut())
    });
    case!(
        v,
        "C_GetMechanismList",
        "count 0 with a list",
        [CKR_BUFFER_TOO_SMALL],
        |e, s| {
            let mut l = [0 as CK_MECHANISM_TYPE; 1];
            let mut n = 0;
            let rv = call!(e.f, C_GetMechanismList, 0, l.as_mut_ptr(), &mut n);
            assert!(n > 1, "needed count reported");
            rv
        }
    );
    case!(
        v,
        "C_GetMechanismList",
        "NULL list, huge count",
        [CKR_OK],
        |e, s| {
            let mut n = HUGE;
            let rv = call!(e.f, C_GetMechanismList, 0, null_mut(), &mut n);
            assert!(n < 1000);
            rv
        }
    );
    case!(
        v,
        "C_GetMechanismInfo",
        "unknown mechanism",
        [CKR_MECHANISM_INVALID],
        |e, s| {
            let mut i: CK_MECHANISM_INFO = unsafe { std::mem::zeroed() };
            call!(e.f, C_GetMechanismInfo, 0, 0x7fff_1234, &mut i)
        }
    );
    case!(v, "C_GetMechanismInfo", "NULL info", [AB], |e, s| {
        call!(e.f, C_GetMechanismInfo, 0, CKM_AES_CBC, null_mut())
    });
    case!(
        v,
        "C_GetMechanismInfo",
        "bad slot",
        [CKR_SLOT_ID_INVALID],
        |e, s| {
            let mut i: CK_MECHANISM_INFO = unsafe { std::mem::zeroed() };
            call!(e.f, C_GetMechanismInfo, 7, CKM_AES_CBC, &mut i)
        }
    );
    case!(
        v,
        "C_InitToken",
        "bad slot",
        [CKR_SLOT_ID_INVALID],
        |e, s| {
            let mut p = pin_bytes("so-pin-xxxx");
            let mut l = label32;
            call!(
                e.f,
                C_InitToken,
                5,
                p.as_mut_ptr(),
                p.len() as CK_ULONG,
                l.as_mut_ptr()
            )
        }
    );
    case!(v, "C_InitToken", "NULL PIN, huge length", [AB], |e, s| {
        let mut l = label32;
        call!(e.f, C_InitToken, 0, null_mut(), HUGE, l.as_mut_ptr())
    });
    case!(v, "C_InitToken", "NULL label", [AB], |e, s| {
        let mut p = pin_bytes("so-pin-xxxx");
        call!(
            e.f,
            C_InitToken,
            0,
            p.as_mut_ptr(),
            p.len() as CK_ULONG,
            null_mut()
        )
    });
    case!(
        v,
        "C_InitToken",
        "sessions are open",
        [CKR_SESSION_EXISTS],
        |e, s| {
            let mut p = pin_bytes("so-pin-xxxx");
            let mut l = label32;
            call!(
                e.f,
                C_InitToken,
                0,
                p.as_mut_ptr(),
                p.len() as CK_ULONG,
                l.as_mut_ptr()
            )
        }
    );
    case!(v, "C_InitPIN", "NULL PIN, huge length", [AB], |e, s| {
        call!(e.f, C_InitPIN, s, null_mut(), HUGE)
    });
    case!(
        v,
        "C_InitPIN",
        "user (not SO) logged in",
        [CKR_USER_NOT_LOGGED_IN],
        |e, s| {
            let mut p = pin_bytes("another-pin");
            call!(e.f, C_InitPIN, s, p.as_mut_ptr(), p.len() as CK_ULONG)
        }
    );
    // A read-only session and no SO: either failure may be reported first.
    case!(
        v,
        "C_InitPIN",
        "read-only session",
        [CKR_SESSION_READ_ONLY, CKR_USER_NOT_LOGGED_IN],
        |e, s| {
            let mut p = pin_bytes("another-pin");
            call!(e.f, C_InitPIN, e.ro, p.as_mut_ptr(), p.len() as CK_ULONG)
        }
    );
    case!(v, "C_SetPIN", "NULL old PIN, huge length", [AB], |e, s| {
        let mut b = pin_bytes("new-pin-xx");
        call!(e.f, C_SetPIN, s, null_mut(), HUGE, b.as_mut_ptr(), 10)
    });
    case!(v, "C_SetPIN", "NULL new PIN, huge length", [AB], |e, s| {
        let mut a = pin_bytes("old-pin-xx");
        call!(e.f, C_SetPIN, s, a.as_mut_ptr(), 10, null_mut(), HUGE)
    });
    case!(
        v,
        "C_SetPIN",
        "read-only session",
        [CKR_SESSION_READ_ONLY],
        |e, s| {
            let mut a = pin_bytes("old-pin-xx");
            let mut b = pin_bytes("new-pin-xx");
            call!(e.f, C_SetPIN, e.ro, a.as_mut_ptr(), 10, b.as_mut_ptr(), 10)
        }
    );
    case!(
        v,
        "C_SetPIN",
        "new PIN too short",
        [CKR_PIN_LEN_RANGE],
        |e, s| {
            let mut a = pin_bytes("old-pin-xx");
            let mut b = pin_bytes("x");
            call!(e.f, C_SetPIN, s, a.as_mut_ptr(), 10, b.as_mut_ptr(), 1)
        }
    );
    case!(v, "C_WaitForSlotEvent", "NULL slot", [AB], |e, s| {
        call!(
            e.f,
            C_WaitForSlotEvent,
            CKF_DONT_BLOCK,
            null_mut(),
            null_mut()
        )
    });
    case!(
        v,
        "C_WaitForSlotEvent",
        "pReserved not NULL",
        [AB],
        |e, s| {
            let mut slot = 0;
            let mut x = 0u8;
            call!(
                e.f,
                C_WaitForSlotEvent,
                CKF_DONT_BLOCK,
                &mut slot,
                ptr(&mut x) as CK_VOID_PTR
            )
        }
    );
    case!(
        v,
        "C_WaitForSlotEvent",
        "no event, don't block",
        [CKR_NO_EVENT],
        |e, s| {
            let mut slot = 0;
            call!(
                e.f,
                C_WaitForSlotEvent,
                CKF_DONT_BLOCK,
                &mut slot,
                null_mut()
            )
        }
    );

    // --- sessions ---
    case!(
        v,
        "C_OpenSession",
        "bad slot",
        [CKR_SLOT_ID_INVALID],
        |e, s| {
            let mut h = 0;
            call!(
                e.f,
                C_OpenSession,
                42,
                CKF_SERIAL_SESSION,
                null_mut(),
                None,
                &mut h
            )
        }
    );
    case!(
        v,
        "C_OpenSession",
        "no CKF_SERIAL_SESSION",
        [CKR_SESSION_PARALLEL_NOT_SUPPORTED],
        |e, s| {
            let mut h = 0;
            call!(
                e.f,
                C_OpenSession,
                0,
                CKF_RW_SESSION,
                null_mut(),
                None,
                &mut h
            )
        }
    );
    case!(v, "C_OpenSession", "NULL handle", [AB], |e, s| {
        call!(
            e.f,
            C_OpenSession,
            0,
            CKF_SERIAL_SESSION,
            null_mut(),
            None,
            null_mut()
        )
    });
    case!(
        v,
        "C_CloseSession",
        "twice",
        [CKR_SESSION_HANDLE_INVALID],
        |e, s| {
            let h = open(e.f, true);
            close(e.f, h);
            call!(e.f, C_CloseSession, h)
        }
    );
    case!(
        v,
        "C_CloseAllSessions",
        "bad slot",
        [CKR_SLOT_ID_INVALID],
        |e, s| { call!(e.f, C_CloseAllSessions, 3) }
    );
    case!(v, "C_GetSessionInfo", "NULL info", [AB], |e, s| {
        call!(e.f, C_GetSessionInfo, s, null_mut())
    });
    // Operation state is not exportable here: FUNCTION_NOT_SUPPORTED or STATE_UNSAVEABLE,
    // and with a NULL length pointer ARGUMENTS_BAD is also right.
    case!(
        v,
        "C_GetOperationState",
        "NULL length",
        [AB, CKR_FUNCTION_NOT_SUPPORTED, CKR_STATE_UNSAVEABLE],
        |e, s| { call!(e.f, C_GetOperationState, s, null_mut(), null_mut()) }
    );
    case!(
        v,
        "C_GetOperationState",
        "valid",
        [CKR_FUNCTION_NOT_SUPPORTED, CKR_STATE_UNSAVEABLE],
        |e, s| {
            let mut l = 0;
            call!(e.f, C_GetOperationState, s, null_mut(), &mut l)
        }
    );
    case!(
        v,
        "C_SetOperationState",
        "NULL state, huge length",
        [AB, CKR_FUNCTION_NOT_SUPPORTED, CKR_SAVED_STATE_INVALID],
        |e, s| { call!(e.f, C_SetOperationState, s, null_mut(), HUGE, 0, 0) }
    );
    case!(v, "C_Login", "NULL PIN, huge length", [AB], |e, s| {
        call!(e.f, C_Login, s, CKU_USER, null_mut(), HUGE)
    });
    case!(
        v,
        "C_Login",
        "unknown user type",
        [CKR_USER_TYPE_INVALID],
        |e, s| {
            let mut p = pin_bytes(common::USER_PIN);
            call!(e.f, C_Login, s, 77, p.as_mut_ptr(), p.len() as CK_ULONG)
        }
    );
    case!(
        v,
        "C_Login",
        "user again",
        [CKR_USER_ALREADY_LOGGED_IN],
        |e, s| {
            let mut p = pin_bytes("not-the-pin");
            call!(
                e.f,
                C_Login,
                s,
                CKU_USER,
                p.as_mut_ptr(),
                p.len() as CK_ULONG
            )
        }
    );
    case!(
        v,
        "C_Login",
        "SO while user is logged in",
        [CKR_USER_ANOTHER_ALREADY_LOGGED_IN],
        |e, s| {
            let mut p = pin_bytes("not-the-pin");
            call!(e.f, C_Login, s, CKU_SO, p.as_mut_ptr(), p.len() as CK_ULONG)
        }
    );

    // --- objects ---
    case!(
        v,
        "C_CreateObject",
        "NULL template, huge count",
        [AB],
        |e, s| {
            let mut o = 0;
            call!(e.f, C_CreateObject, s, null_mut(), HUGE, &mut o)
        }
    );
    case!(v, "C_CreateObject", "NULL handle out", [AB], |e, s| {
        let mut t = Tpl::new().ulong(CKA_CLASS, CKO_DATA);
        call!(e.f, C_CreateObject, s, t.c(), t.n(), null_mut())
    });
    case!(
        v,
        "C_CreateObject",
        "empty template",
        [CKR_TEMPLATE_INCOMPLETE],
        |e, s| {
            let mut o = 0;
            call!(e.f, C_CreateObject, s, null_mut(), 0, &mut o)
        }
    );
    case!(
        v,
        "C_CopyObject",
        "NULL template, huge count",
        [AB],
        |e, s| {
            let mut o = 0;
            call!(e.f, C_CopyObject, s, e.aes, null_mut(), HUGE, &mut o)
        }
    );
    case!(v, "C_CopyObject", "NULL handle out", [AB], |e, s| {
        call!(e.f, C_CopyObject, s, e.aes, null_mut(), 0, null_mut())
    });
    case!(
        v,
        "C_DestroyObject",
        "token key from a read-only session",
        [CKR_SESSION_READ_ONLY],
        |e, s| { call!(e.f, C_DestroyObject, e.ro, e.aes_tok) }
    );
    case!(v, "C_GetObjectSize", "NULL size", [AB], |e, s| {
        call!(e.f, C_GetObjectSize, s, e.aes, null_mut())
    });
    case!(
        v,
        "C_GetAttributeValue",
        "NULL template, huge count",
        [AB],
        |e, s| { call!(e.f, C_GetAttributeValue, s, e.aes, null_mut(), HUGE) }
    );
    case!(
        v,
        "C_GetAttributeValue",
        "empty template",
        [CKR_OK],
        |e, s| { call!(e.f, C_GetAttributeValue, s, e.aes, null_mut(), 0) }
    );
    case!(
        v,
        "C_GetAttributeValue",
        "unknown attribute type",
        [CKR_ATTRIBUTE_TYPE_INVALID],
        |e, s| {
            let mut t = Tpl::new().null(0x7777_0001, 0).null(CKA_LABEL, 0);
            let p = t.c();
            let rv = call!(e.f, C_GetAttributeValue, s, e.aes, p, 2);
            // SAFETY: p points to the two attributes of `t`.
            let a = unsafe { std::slice::from_raw_parts(p, 2) };
            assert_eq!(a[0].ulValueLen, CK_UNAVAILABLE_INFORMATION);
            assert_ne!(
                a[1].ulValueLen, CK_UNAVAILABLE_INFORMATION,
                "the other attributes are still answered"
            );
            rv
        }
    );
    case!(
        v,
        "C_GetAttributeValue",
        "attribute invalid for the class",
        [CKR_ATTRIBUTE_TYPE_INVALID],
        |e, s| {
            let mut t = Tpl::new().null(CKA_MODULUS, 0);
            call!(e.f, C_GetAttributeValue, s, e.aes, t.c(), 1)
        }
    );
    case!(
        v,
        "C_GetAttributeValue",
        "buffer too small",
        [CKR_BUFFER_TOO_SMALL],
        |e, s| {
            let mut buf = [0u8; 1];
            let mut a = CK_ATTRIBUTE {
                type_: CKA_KEY_TYPE,
                pValue: buf.as_mut_ptr() as CK_VOID_PTR,
                ulValueLen: 1,
            };
            let rv = call!(e.f, C_GetAttributeValue, s, e.aes, &mut a, 1);
            assert_eq!(a.ulValueLen, CK_UNAVAILABLE_INFORMATION);
            rv
        }
    );
    case!(
        v,
        "C_SetAttributeValue",
        "NULL template, huge count",
        [AB],
        |e, s| { call!(e.f, C_SetAttributeValue, s, e.aes, null_mut(), HUGE) }
    );
    // A NULL value with a non-zero length: the spec names no code for this case;
    // ATTRIBUTE_VALUE_INVALID and ARGUMENTS_BAD both describe it.
    case!(
        v,
        "C_SetAttributeValue",
        "NULL value, huge length",
        [CKR_ATTRIBUTE_VALUE_INVALID, AB],
        |e, s| {
            let mut t = Tpl::new().null(CKA_LABEL, HUGE);
            call!(e.f, C_SetAttributeValue, s, e.aes, t.c(), t.n())
        }
    );
    case!(
        v,
        "C_FindObjectsInit",
        "NULL template, huge count",
        [AB],
        |e, s| { call!(e.f, C_FindObjectsInit, s, null_mut(), HUGE) }
    );
    case!(v, "C_FindObjects", "NULL count out", [AB], |e, s| {
        expect_rv(
            "init",
            call!(e.f, C_FindObjectsInit, s, null_mut(), 0),
            CKR_OK,
        );
        let mut b = [0; 2];
        call!(e.f, C_FindObjects, s, b.as_mut_ptr(), 2, null_mut())
    });
    case!(
        v,
        "C_FindObjects",
        "NULL handles, huge max",
        [AB],
        |e, s| {
            expect_rv(
                "init",
                call!(e.f, C_FindObjectsInit, s, null_mut(), 0),
                CKR_OK,
            );
            let mut n = 0;
            call!(e.f, C_FindObjects, s, null_mut(), HUGE, &mut n)
        }
    );
    case!(v, "C_FindObjects", "max 0", [CKR_OK], |e, s| {
        expect_rv(
            "init",
            call!(e.f, C_FindObjectsInit, s, null_mut(), 0),
            CKR_OK,
        );
        let mut n = 99;
        let rv = call!(e.f, C_FindObjects, s, null_mut(), 0, &mut n);
        assert_eq!(n, 0);
        rv
    });

    // --- cryptographic functions: NULL mechanism / buffers / lengths ---
    // PKCS#11 3.0 made a NULL mechanism in C_xxxInit cancel the active operation; v2.40
    // calls it ARGUMENTS_BAD. Both are accepted.
    case!(
        v,
        "C_EncryptInit",
        "NULL mechanism",
        [AB, CKR_OK],
        |e, s| { call!(e.f, C_EncryptInit, s, null_mut(), e.aes) }
    );
    case!(
        v,
        "C_DecryptInit",
        "NULL mechanism",
        [AB, CKR_OK],
        |e, s| { call!(e.f, C_DecryptInit, s, null_mut(), e.aes) }
    );
    case!(v, "C_SignInit", "NULL mechanism", [AB, CKR_OK], |e, s| {
        call!(e.f, C_SignInit, s, null_mut(), e.hmac)
    });
    case!(v, "C_VerifyInit", "NULL mechanism", [AB, CKR_OK], |e, s| {
        call!(e.f, C_VerifyInit, s, null_mut(), e.hmac)
    });
    case!(v, "C_DigestInit", "NULL mechanism", [AB, CKR_OK], |e, s| {
        call!(e.f, C_DigestInit, s, null_mut())
    });
    case!(
        v,
        "C_EncryptInit",
        "unknown mechanism",
        [CKR_MECHANISM_INVALID],
        |e, s| {
            let mut m = mech(0x7fff_4321);
            call!(e.f, C_EncryptInit, s, &mut m, e.aes)
        }
    );
    case!(
        v,
        "C_EncryptInit",
        "digest mechanism",
        [CKR_MECHANISM_INVALID],
        |e, s| {
            let mut m = mech(CKM_SHA256);
            call!(e.f, C_EncryptInit, s, &mut m, e.aes)
        }
    );
    case!(
        v,
        "C_EncryptInit",
        "EC key with AES",
        [CKR_KEY_TYPE_INCONSISTENT],
        |e, s| {
            let mut m = mech(CKM_AES_ECB);
            call!(e.f, C_EncryptInit, s, &mut m, e.ec_pub)
        }
    );
    case!(
        v,
        "C_EncryptInit",
        "key without CKA_ENCRYPT",
        [CKR_KEY_FUNCTION_NOT_PERMITTED],
        |e, s| {
            let mut m = mech(CKM_AES_ECB);
            call!(e.f, C_EncryptInit, s, &mut m, e.noenc)
        }
    );
    case!(
        v,
        "C_EncryptInit",
        "NULL parameter, huge length",
        [CKR_MECHANISM_PARAM_INVALID],
        |e, s| {
            let mut m = CK_MECHANISM {
                mechanism: CKM_AES_CBC,
                pParameter: null_mut(),
                ulParameterLen: HUGE,
            };
            call!(e.f, C_EncryptInit, s, &mut m, e.aes)
        }
    );
    case!(v, "C_Encrypt", "NULL data, huge length", [AB], |e, s| {
        let mut m = mech(CKM_AES_ECB);
        expect_rv("init", call!(e.f, C_EncryptInit, s, &mut m, e.aes), CKR_OK);
        let mut l = 0;
        call!(e.f, C_Encrypt, s, null_mut(), HUGE, null_mut(), &mut l)
    });
    case!(v, "C_Encrypt", "NULL length out", [AB], |e, s| {
        let mut m = mech(CKM_AES_ECB);
        expect_rv("init", call!(e.f, C_EncryptInit, s, &mut m, e.aes), CKR_OK);
        let mut d = [0u8; 16];
        call!(
            e.f,
            C_Encrypt,
            s,
            d.as_mut_ptr(),
            16,
            null_mut(),
            null_mut()
        )
    });
    case!(
        v,
        "C_EncryptUpdate",
        "NULL data, huge length",
        [AB],
        |e, s| {
            let mut l = 0;
            call!(
                e.f,
                C_EncryptUpdate,
                s,
                null_mut(),
                HUGE,
                null_mut(),
                &mut l
            )
        }
    );
    case!(v, "C_EncryptUpdate", "NULL length out", [AB], |e, s| {
        call!(
            e.f,
            C_EncryptUpdate,
            s,
            null_mut(),
            0,
            null_mut(),
            null_mut()
        )
    });
    case!(v, "C_EncryptFinal", "NULL length out", [AB], |e, s| {
        call!(e.f, C_EncryptFinal, s, null_mut(), null_mut())
    });
    case!(v, "C_Decrypt", "NULL data, huge length", [AB], |e, s| {
        let mut l = 0;
        call!(e.f, C_Decrypt, s, null_mut(), HUGE, null_mut(), &mut l)
    });
    case!(v, "C_Decrypt", "NULL length out", [AB], |e, s| {
        call!(e.f, C_Decrypt, s, null_mut(), 0, null_mut(), null_mut())
    });
    case!(
        v,
        "C_DecryptUpdate",
        "NULL data, huge length",
        [AB],
        |e, s| {
            let mut l = 0;
            call!(
                e.f,
                C_DecryptUpdate,
                s,
                null_mut(),
                HUGE,
                null_mut(),
                &mut l
            )
        }
    );
    case!(v, "C_DecryptFinal", "NULL length out", [AB], |e, s| {
        call!(e.f, C_DecryptFinal, s, null_mut(), null_mut())
    });
    case!(
        v,
        "C_DigestInit",
        "not a digest mechanism",
        [CKR_MECHANISM_INVALID],
        |e, s| {
            let mut m = mech(CKM_AES_ECB);
            call!(e.f, C_DigestInit, s, &mut m)
        }
    );
    case!(v, "C_Digest", "NULL data, huge length", [AB], |e, s| {
        let mut l = 0;
        call!(e.f, C_Digest, s, null_mut(), HUGE, null_mut(), &mut l)
    });
    case!(v, "C_Digest", "NULL length out", [AB], |e, s| {
        call!(e.f, C_Digest, s, null_mut(), 0, null_mut(), null_mut())
    });
    case!(
        v,
        "C_DigestUpdate",
        "NULL data, huge length",
        [AB],
        |e, s| { call!(e.f, C_DigestUpdate, s, null_mut(), HUGE) }
    );
    case!(v, "C_DigestFinal", "NULL length out", [AB], |e, s| {
        call!(e.f, C_DigestFinal, s, null_mut(), null_mut())
    });
    case!(
        v,
        "C_DigestKey",
        "CMK (sensitive)",
        [CKR_KEY_INDIGESTIBLE],
        |e, s| {
            let mut m = mech(CKM_SHA256);
            expect_rv("init", call!(e.f, C_DigestInit, s, &mut m), CKR_OK);
            call!(e.f, C_DigestKey, s, e.aes_tok)
        }
    );
    case!(
        v,
        "C_DigestKey",
        "extractable session key",
        [CKR_OK],
        |e, s| {
            let mut m = mech(CKM_SHA256);
            expect_rv("init", call!(e.f, C_DigestInit, s, &mut m), CKR_OK);
            call!(e.f, C_DigestKey, s, e.aes)
        }
    );
    case!(v, "C_Sign", "NULL data, huge length", [AB], |e, s| {
        let mut l = 0;
        call!(e.f, C_Sign, s, null_mut(), HUGE, null_mut(), &mut l)
    });
    case!(v, "C_Sign", "NULL length out", [AB], |e, s| {
        call!(e.f, C_Sign, s, null_mut(), 0, null_mut(), null_mut())
    });
    case!(v, "C_SignUpdate", "NULL data, huge length", [AB], |e, s| {
        call!(e.f, C_SignUpdate, s, null_mut(), HUGE)
    });
    case!(v, "C_SignFinal", "NULL length out", [AB], |e, s| {
        call!(e.f, C_SignFinal, s, null_mut(), null_mut())
    });
    case!(v, "C_Verify", "NULL data, huge length", [AB], |e, s| {
        let mut sig = [0u8; 32];
        call!(e.f, C_Verify, s, null_mut(), HUGE, sig.as_mut_ptr(), 32)
    });
    case!(
        v,
        "C_Verify",
        "NULL signature, huge length",
        [AB],
        |e, s| {
            let mut d = [0u8; 4];
            call!(e.f, C_Verify, s, d.as_mut_ptr(), 4, null_mut(), HUGE)
        }
    );
    case!(
        v,
        "C_VerifyUpdate",
        "NULL data, huge length",
        [AB],
        |e, s| { call!(e.f, C_VerifyUpdate, s, null_mut(), HUGE) }
    );
    case!(
        v,
        "C_VerifyFinal",
        "NULL signature, huge length",
        [AB],
        |e, s| { call!(e.f, C_VerifyFinal, s, null_mut(), HUGE) }
    );
    // Functions this token does not offer: FUNCTION_NOT_SUPPORTED whatever the
    // arguments (ARGUMENTS_BAD for the NULL pointers is equally right).
    case!(
        v,
        "C_SignRecoverInit",
        "supported?",
        [CKR_FUNCTION_NOT_SUPPORTED],
        |e, s| {
            let mut m = mech(CKM_RSA_PKCS);
            call!(e.f, C_SignRecoverInit, s, &mut m, e.rsa_priv)
        }
    );
    case!(
        v,
        "C_SignRecover",
        "NULL data, huge length",
        [CKR_FUNCTION_NOT_SUPPORTED, AB],
        |e, s| {
            call!(
                e.f,
                C_SignRecover,
                s,
                null_mut(),
                HUGE,
                null_mut(),
                null_mut()
            )
        }
    );
    case!(
        v,
        "C_VerifyRecoverInit",
        "supported?",
        [CKR_FUNCTION_NOT_SUPPORTED],
        |e, s| {
            let mut m = mech(CKM_RSA_PKCS);
            call!(e.f, C_VerifyRecoverInit, s, &mut m, e.rsa_pub)
        }
    );
    case!(
        v,
        "C_VerifyRecover",
        "NULL data, huge length",
        [CKR_FUNCTION_NOT_SUPPORTED, AB],
        |e, s| {
            call!(
                e.f,
                C_VerifyRecover,
                s,
                null_mut(),
                HUGE,
                null_mut(),
                null_mut()
            )
        }
    );
    case!(
        v,
        "C_DigestEncryptUpdate",
        "NULL data, huge length",
        [CKR_FUNCTION_NOT_SUPPORTED, AB],
        |e, s| {
            call!(
                e.f,
                C_DigestEncryptUpdate,
                s,
                null_mut(),
                HUGE,
                null_mut(),
                null_mut()
            )
        }
    );
    case!(
        v,
        "C_DecryptDigestUpdate",
        "NULL data, huge length",
        [CKR_FUNCTION_NOT_SUPPORTED, AB],
        |e, s| {
            call!(
                e.f,
                C_DecryptDigestUpdate,
                s,
                null_mut(),
                HUGE,
                null_mut(),
                null_mut()
            )
        }
    );
    case!(
        v,
        "C_SignEncryptUpdate",
        "NULL data, huge length",
        [CKR_FUNCTION_NOT_SUPPORTED, AB],
        |e, s| {
            call!(
                e.f,
                C_SignEncryptUpdate,
                s,
                null_mut(),
                HUGE,
                null_mut(),
                null_mut()
            )
        }
    );
    case!(
        v,
        "C_DecryptVerifyUpdate",
        "NULL data, huge length",
        [CKR_FUNCTION_NOT_SUPPORTED, AB],
        |e, s| {
            call!(
                e.f,
                C_DecryptVerifyUpdate,
                s,
                null_mut(),
                HUGE,
                null_mut(),
                null_mut()
            )
        }
    );

    // --- key management ---
    case!(v, "C_GenerateKey", "NULL mechanism", [AB], |e, s| {
        let mut t = Tpl::new().ulong(CKA_VALUE_LEN, 16);
        let mut o = 0;
        call!(e.f, C_GenerateKey, s, null_mut(), t.c(), t.n(), &mut o)
    });
    case!(
        v,
        "C_GenerateKey",
        "NULL template, huge count",
        [AB],
        |e, s| {
            let mut m = mech(CKM_AES_KEY_GEN);
            let mut o = 0;
            call!(e.f, C_GenerateKey, s, &mut m, null_mut(), HUGE, &mut o)
        }
    );
    case!(v, "C_GenerateKey", "NULL handle out", [AB], |e, s| {
        let mut m = mech(CKM_AES_KEY_GEN);
        let mut t = Tpl::new().ulong(CKA_VALUE_LEN, 16);
        call!(e.f, C_GenerateKey, s, &mut m, t.c(), t.n(), null_mut())
    });
    case!(
        v,
        "C_GenerateKey",
        "not a key generation mechanism",
        [CKR_MECHANISM_INVALID],
        |e, s| {
            let mut m = mech(CKM_SHA256);
            let mut t = Tpl::new().ulong(CKA_VALUE_LEN, 16);
            let mut o = 0;
            call!(e.f, C_GenerateKey, s, &mut m, t.c(), t.n(), &mut o)
        }
    );
    case!(
        v,
        "C_GenerateKey",
        "no CKA_VALUE_LEN",
        [CKR_TEMPLATE_INCOMPLETE],
        |e, s| {
            let mut m = mech(CKM_AES_KEY_GEN);
            let mut o = 0;
            call!(e.f, C_GenerateKey, s, &mut m, null_mut(), 0, &mut o)
        }
    );
    // A key length the mechanism cannot make: KEY_SIZE_RANGE, or the template's value
    // is invalid (ATTRIBUTE_VALUE_INVALID); both are used by tokens.
    case!(
        v,
        "C_GenerateKey",
        "AES key of 17 bytes",
        [CKR_KEY_SIZE_RANGE, CKR_ATTRIBUTE_VALUE_INVALID],
        |e, s| {
            let mut m = mech(CKM_AES_KEY_GEN);
            let mut t = Tpl::new().ulong(CKA_VALUE_LEN, 17);
            let mut o = 0;
            call!(e.f, C_GenerateKey, s, &mut m, t.c(), t.n(), &mut o)
        }
    );
    case!(
        v,
        "C_GenerateKey",
        "AES key of 2^40 bytes",
        [CKR_KEY_SIZE_RANGE, CKR_ATTRIBUTE_VALUE_INVALID],
        |e, s| {
            let mut m = mech(CKM_AES_KEY_GEN);
            let mut t = Tpl::new().ulong(CKA_VALUE_LEN, HUGE);
            let mut o = 0;
            call!(e.f, C_GenerateKey, s, &mut m, t.c(), t.n(), &mut o)
        }
    );
    case!(
        v,
        "C_GenerateKey",
        "generic secret of 2^40 bytes",
        [CKR_KEY_SIZE_RANGE, CKR_ATTRIBUTE_VALUE_INVALID],
        |e, s| {
            let mut m = mech(CKM_GENERIC_SECRET_KEY_GEN);
            let mut t = Tpl::new().ulong(CKA_VALUE_LEN, HUGE);
            let mut o = 0;
            call!(e.f, C_GenerateKey, s, &mut m, t.c(), t.n(), &mut o)
        }
    );
    case!(
        v,
        "C_GenerateKey",
        "token key in a read-only session",
        [CKR_SESSION_READ_ONLY],
        |e, s| {
            let mut m = mech(CKM_AES_KEY_GEN);
            let mut t = Tpl::new().ulong(CKA_VALUE_LEN, 16).bool(CKA_TOKEN, true);
            let mut o = 0;
            call!(e.f, C_GenerateKey, e.ro, &mut m, t.c(), t.n(), &mut o)
        }
    );
    case!(v, "C_GenerateKeyPair", "NULL mechanism", [AB], |e, s| {
        let (mut a, mut b) = (0, 0);
        call!(
            e.f,
            C_GenerateKeyPair,
            s,
            null_mut(),
            null_mut(),
            0,
            null_mut(),
            0,
            &mut a,
            &mut b
        )
    });
    case!(
        v,
        "C_GenerateKeyPair",
        "NULL public template, huge count",
        [AB],
        |e, s| {
            let mut m = mech(CKM_EC_KEY_PAIR_GEN);
            let (mut a, mut b) = (0, 0);
            call!(
                e.f,
                C_GenerateKeyPair,
                s,
                &mut m,
                null_mut(),
                HUGE,
                null_mut(),
                0,
                &mut a,
                &mut b
            )
        }
    );
    case!(
        v,
        "C_GenerateKeyPair",
        "NULL private template, huge count",
        [AB],
        |e, s| {
            let mut m = mech(CKM_EC_KEY_PAIR_GEN);
            let mut t = Tpl::new().bytes(CKA_EC_PARAMS, P256_OID);
            let (mut a, mut b) = (0, 0);
            call!(
                e.f,
                C_GenerateKeyPair,
                s,
                &mut m,
                t.c(),
                t.n(),
                null_mut(),
                HUGE,
                &mut a,
                &mut b
            )
        }
    );
    case!(
        v,
        "C_GenerateKeyPair",
        "NULL public handle out",
        [AB],
        |e, s| {
            let mut m = mech(CKM_EC_KEY_PAIR_GEN);
            let mut t = Tpl::new().bytes(CKA_EC_PARAMS, P256_OID);
            let mut b = 0;
            call!(
                e.f,
                C_GenerateKeyPair,
                s,
                &mut m,
                t.c(),
                t.n(),
                null_mut(),
                0,
                null_mut(),
                &mut b
            )
        }
    );
    case!(
        v,
        "C_GenerateKeyPair",
        "NULL private handle out",
        [AB],
        |e, s| {
            let mut m = mech(CKM_EC_KEY_PAIR_GEN);
            let mut t = Tpl::new().bytes(CKA_EC_PARAMS, P256_OID);
            let mut a = 0;
            call!(
                e.f,
                C_GenerateKeyPair,
                s,
                &mut m,
                t.c(),
                t.n(),
                null_mut(),
                0,
                &mut a,
                null_mut()
            )
        }
    );
    case!(
        v,
        "C_GenerateKeyPair",
        "no CKA_EC_PARAMS",
        [CKR_TEMPLATE_INCOMPLETE],
        |e, s| {
            let mut m = mech(CKM_EC_KEY_PAIR_GEN);
            let (mut a, mut b) = (0, 0);
            call!(
                e.f,
                C_GenerateKeyPair,
                s,
                &mut m,
                null_mut(),
                0,
                null_mut(),
                0,
                &mut a,
                &mut b
            )
        }
    );
    // Unknown curve: CKR_CURVE_NOT_SUPPORTED (v2.40) or the older DOMAIN_PARAMS_INVALID.
    case!(
        v,
        "C_GenerateKeyPair",
        "unsupported curve",
        [CKR_CURVE_NOT_SUPPORTED, CKR_DOMAIN_PARAMS_INVALID],
        |e, s| {
            let mut m = mech(CKM_EC_KEY_PAIR_GEN);
            let mut t = Tpl::new().bytes(CKA_EC_PARAMS, &[0x06, 0x03, 0x2b, 0x65, 0x70]);
            let (mut a, mut b) = (0, 0);
            call!(
                e.f,
                C_GenerateKeyPair,
                s,
                &mut m,
                t.c(),
                t.n(),
                null_mut(),
                0,
                &mut a,
                &mut b
            )
        }
    );
    case!(
        v,
        "C_GenerateKeyPair",
        "RSA modulus of 2^40 bits",
        [CKR_KEY_SIZE_RANGE, CKR_ATTRIBUTE_VALUE_INVALID],
        |e, s| {
            let mut m = mech(CKM_RSA_PKCS_KEY_PAIR_GEN);
            let mut t = Tpl::new().ulong(CKA_MODULUS_BITS, HUGE);
            let (mut a, mut b) = (0, 0);
            call!(
                e.f,
                C_GenerateKeyPair,
                s,
                &mut m,
                t.c(),
                t.n(),
                null_mut(),
                0,
                &mut a,
                &mut b
            )
        }
    );
    case!(v, "C_WrapKey", "NULL mechanism", [AB], |e, s| {
        let mut l = 0;
        call!(
            e.f,
            C_WrapKey,
            s,
            null_mut(),
            e.aes,
            e.hmac,
            null_mut(),
            &mut l
        )
    });
    case!(v, "C_WrapKey", "NULL length out", [AB], |e, s| {
        let mut m = mech(CKM_AES_KEY_WRAP_PAD);
        call!(
            e.f,
            C_WrapKey,
            s,
            &mut m,
            e.aes,
            e.hmac,
            null_mut(),
            null_mut()
        )
    });
    // v2.40 C_WrapKey: a wrapping key of the wrong type is WRAPPING_KEY_TYPE_INCONSISTENT.
    case!(
        v,
        "C_WrapKey",
        "EC key as the wrapping key",
        [CKR_WRAPPING_KEY_TYPE_INCONSISTENT],
        |e, s| {
            let mut m = mech(CKM_AES_KEY_WRAP_PAD);
            let mut l = 0;
            call!(
                e.f,
                C_WrapKey,
                s,
                &mut m,
                e.ec_pub,
                e.hmac,
                null_mut(),
                &mut l
            )
        }
    );
    case!(
        v,
        "C_WrapKey",
        "public key as the key to wrap",
        [CKR_KEY_NOT_WRAPPABLE],
        |e, s| {
            let mut m = mech(CKM_AES_KEY_WRAP_PAD);
            let mut l = 0;
            call!(
                e.f,
                C_WrapKey,
                s,
                &mut m,
                e.aes,
                e.ec_pub,
                null_mut(),
                &mut l
            )
        }
    );
    case!(
        v,
        "C_WrapKey",
        "buffer too small",
        [CKR_BUFFER_TOO_SMALL],
        |e, s| {
            let mut m = mech(CKM_AES_KEY_WRAP_PAD);
            let mut out = [0u8; 4];
            let mut l = 4;
            let rv = call!(
                e.f,
                C_WrapKey,
                s,
                &mut m,
                e.aes,
                e.hmac,
                out.as_mut_ptr(),
                &mut l
            );
            assert_eq!(l, 40, "the needed length is returned");
            rv
        }
    );
    case!(v, "C_UnwrapKey", "NULL mechanism", [AB], |e, s| {
        let mut w = [0u8; 24];
        let mut o = 0;
        call!(
            e.f,
            C_UnwrapKey,
            s,
            null_mut(),
            e.aes,
            w.as_mut_ptr(),
            24,
            null_mut(),
            0,
            &mut o
        )
    });
    case!(
        v,
        "C_UnwrapKey",
        "NULL wrapped key, huge length",
        [AB],
        |e, s| {
            let mut m = mech(CKM_AES_KEY_WRAP_PAD);
            let mut o = 0;
            call!(
                e.f,
                C_UnwrapKey,
                s,
                &mut m,
                e.aes,
                null_mut(),
                HUGE,
                null_mut(),
                0,
                &mut o
            )
        }
    );
    case!(
        v,
        "C_UnwrapKey",
        "NULL template, huge count",
        [AB],
        |e, s| {
            let mut m = mech(CKM_AES_KEY_WRAP_PAD);
            let mut w = [0u8; 24];
            let mut o = 0;
            call!(
                e.f,
                C_UnwrapKey,
                s,
                &mut m,
                e.aes,
                w.as_mut_ptr(),
                24,
                null_mut(),
                HUGE,
                &mut o
            )
        }
    );
    case!(v, "C_UnwrapKey", "NULL handle out", [AB], |e, s| {
        let mut m = mech(CKM_AES_KEY_WRAP_PAD);
        let mut w = [0u8; 24];
        let mut t = Tpl::new()
            .ulong(CKA_CLASS, CKO_SECRET_KEY)
            .ulong(CKA_KEY_TYPE, CKK_AES);
        call!(
            e.f,
            C_UnwrapKey,
            s,
            &mut m,
            e.aes,
            w.as_mut_ptr(),
            24,
            t.c(),
            t.n(),
            null_mut()
        )
    });
    case!(
        v,
        "C_UnwrapKey",
        "garbage wrapped key",
        [CKR_WRAPPED_KEY_INVALID],
        |e, s| {
            let mut m = mech(CKM_AES_KEY_WRAP_PAD);
            let mut w = [0x5au8; 24];
            let mut t = Tpl::new()
                .ulong(CKA_CLASS, CKO_SECRET_KEY)
                .ulong(CKA_KEY_TYPE, CKK_AES);
            let mut o = 0;
            call!(
                e.f,
                C_UnwrapKey,
                s,
                &mut m,
                e.aes,
                w.as_mut_ptr(),
                24,
                t.c(),
                t.n(),
                &mut o
            )
        }
    );
    case!(
        v,
        "C_UnwrapKey",
        "wrapped key of 7 bytes",
        [CKR_WRAPPED_KEY_LEN_RANGE],
        |e, s| {
            let mut m = mech(CKM_AES_KEY_WRAP);
            let mut w = [0x5au8; 7];
            let mut t = Tpl::new()
                .ulong(CKA_CLASS, CKO_SECRET_KEY)
                .ulong(CKA_KEY_TYPE, CKK_AES);
            let mut o = 0;
            call!(
                e.f,
                C_UnwrapKey,
                s,
                &mut m,
                e.aes,
                w.as_mut_ptr(),
                7,
                t.c(),
                t.n(),
                &mut o
            )
        }
    );
    // v2.40 C_UnwrapKey: UNWRAPPING_KEY_TYPE_INCONSISTENT for a key of the wrong type.
    case!(
        v,
        "C_UnwrapKey",
        "HMAC key as the unwrapping key",
        [CKR_UNWRAPPING_KEY_TYPE_INCONSISTENT],
        |e, s| {
            let mut m = mech(CKM_AES_KEY_WRAP_PAD);
            let mut w = [0x5au8; 24];
            let mut t = Tpl::new()
                .ulong(CKA_CLASS, CKO_SECRET_KEY)
                .ulong(CKA_KEY_TYPE, CKK_AES);
            let mut o = 0;
            call!(
                e.f,
                C_UnwrapKey,
                s,
                &mut m,
                e.hmac,
                w.as_mut_ptr(),
                24,
                t.c(),
                t.n(),
                &mut o
            )
        }
    );
    case!(v, "C_DeriveKey", "NULL mechanism", [AB], |e, s| {
        let mut o = 0;
        call!(
            e.f,
            C_DeriveKey,
            s,
            null_mut(),
            e.ec_priv,
            null_mut(),
            0,
            &mut o
        )
    });
    case!(
        v,
        "C_DeriveKey",
        "not a derivation mechanism",
        [CKR_MECHANISM_INVALID],
        |e, s| {
            let mut m = mech(CKM_AES_ECB);
            let mut t = Tpl::new().ulong(CKA_KEY_TYPE, CKK_AES);
            let mut o = 0;
            call!(e.f, C_DeriveKey, s, &mut m, e.ec_priv, t.c(), t.n(), &mut o)
        }
    );
    case!(
        v,
        "C_DeriveKey",
        "NULL template, huge count",
        [AB],
        |e, s| {
            let mut pt = [4u8; 65];
            let mut pb = ecdh_params(CKD_NULL, &mut [], &mut pt);
            let mut m = mech_with(CKM_ECDH1_DERIVE, &mut pb);
            let mut o = 0;
            call!(
                e.f,
                C_DeriveKey,
                s,
                &mut m,
                e.ec_priv,
                null_mut(),
                HUGE,
                &mut o
            )
        }
    );
    case!(v, "C_DeriveKey", "NULL handle out", [AB], |e, s| {
        let mut pt = [4u8; 65];
        let mut pb = ecdh_params(CKD_NULL, &mut [], &mut pt);
        let mut m = mech_with(CKM_ECDH1_DERIVE, &mut pb);
        let mut t = Tpl::new().ulong(CKA_KEY_TYPE, CKK_AES);
        call!(
            e.f,
            C_DeriveKey,
            s,
            &mut m,
            e.ec_priv,
            t.c(),
            t.n(),
            null_mut()
        )
    });
    // The RNG takes no seed: RANDOM_SEED_NOT_SUPPORTED (ARGUMENTS_BAD for the NULL
    // pointer is equally right).
    case!(
        v,
        "C_SeedRandom",
        "valid",
        [CKR_RANDOM_SEED_NOT_SUPPORTED],
        |e, s| {
            let mut b = [1u8; 8];
            call!(e.f, C_SeedRandom, s, b.as_mut_ptr(), 8)
        }
    );
    case!(
        v,
        "C_SeedRandom",
        "NULL seed, huge length",
        [CKR_RANDOM_SEED_NOT_SUPPORTED, AB],
        |e, s| { call!(e.f, C_SeedRandom, s, null_mut(), HUGE) }
    );
    case!(
        v,
        "C_GenerateRandom",
        "NULL buffer, huge length",
        [AB],
        |e, s| { call!(e.f, C_GenerateRandom, s, null_mut(), HUGE) }
    );
    case!(v, "C_GenerateRandom", "zero length", [CKR_OK], |e, s| {
        call!(e.f, C_GenerateRandom, s, null_mut(), 0)
    });
    case!(
        v,
        "C_GetFunctionStatus",
        "legacy",
        [CKR_FUNCTION_NOT_PARALLEL],
        |e, s| { call!(e.f, C_GetFunctionStatus, s) }
    );
    case!(
        v,
        "C_CancelFunction",
        "legacy",
        [CKR_FUNCTION_NOT_PARALLEL],
        |e, s| { call!(e.f, C_CancelFunction, s) }
    );

    // --- PKCS#11 3.0 interfaces (exported symbols, not in the 2.40 list) ---
    case!(v, "C_GetInterfaceList", "NULL count", [AB], |e, s| {
        unsafe {
            let g: libloading::Symbol<
                unsafe extern "C" fn(*mut CK_INTERFACE, CK_ULONG_PTR) -> CK_RV,
            > = e.lib.get(b"C_GetInterfaceList\0").expect("symbol");
            g(null_mut(), null_mut())
        }
    });
    case!(
        v,
        "C_GetInterfaceList",
        "count 0 with a list",
        [CKR_BUFFER_TOO_SMALL],
        |e, s| {
            unsafe {
                let g: libloading::Symbol<
                    unsafe extern "C" fn(*mut CK_INTERFACE, CK_ULONG_PTR) -> CK_RV,
                > = e.lib.get(b"C_GetInterfaceList\0").expect("symbol");
                let mut l: [CK_INTERFACE; 1] = std::mem::zeroed();
                let mut n = 0;
                let rv = g(l.as_mut_ptr(), &mut n);
                assert_eq!(n, 1);
                rv
            }
        }
    );
    case!(
        v,
        "C_GetInterfaceList",
        "NULL list, huge count",
        [CKR_OK],
        |e, s| {
            unsafe {
                let g: libloading::Symbol<
                    unsafe extern "C" fn(*mut CK_INTERFACE, CK_ULONG_PTR) -> CK_RV,
                > = e.lib.get(b"C_GetInterfaceList\0").expect("symbol");
                let mut n = HUGE;
                let rv = g(null_mut(), &mut n);
                assert_eq!(n, 1);
                rv
            }
        }
    );
    type GetIf = unsafe extern "C" fn(
        *mut CK_UTF8CHAR,
        *mut CK_VERSION,
        *mut *mut CK_INTERFACE,
        CK_FLAGS,
    ) -> CK_RV;
    case!(v, "C_GetInterface", "NULL interface out", [AB], |e, s| {
        unsafe {
            let g: libloading::Symbol<GetIf> = e.lib.get(b"C_GetInterface\0").expect("symbol");
            g(null_mut(), null_mut(), null_mut(), 0)
        }
    });
    case!(v, "C_GetInterface", "unknown name", [AB], |e, s| {
        unsafe {
            let g: libloading::Symbol<GetIf> = e.lib.get(b"C_GetInterface\0").expect("symbol");
            let mut name = *b"Vendor Nonsense\0";
            let mut out = null_mut();
            g(name.as_mut_ptr(), null_mut(), &mut out, 0)
        }
    });
    case!(v, "C_GetInterface", "unknown version", [AB], |e, s| {
        unsafe {
            let g: libloading::Symbol<GetIf> = e.lib.get(b"C_GetInterface\0").expect("symbol");
            let mut ver = CK_VERSION { major: 9, minor: 9 };
            let mut out = null_mut();
            g(null_mut(), &mut ver, &mut out, 0)
        }
    });
    case!(v, "C_GetInterface", "default", [CKR_OK], |e, s| {
        unsafe {
            let g: libloading::Symbol<GetIf> = e.lib.get(b"C_GetInterface\0").expect("symbol");
            let mut out = null_mut();
            let rv = g(null_mut(), null_mut(), &mut out, 0);
            assert!(!out.is_null());
            rv
        }
    });
}

/// `CK_ECDH1_DERIVE_PARAMS` bytes over the caller's buffers.
fn ecdh_params(kdf: CK_EC_KDF_TYPE, shared: &mut [u8], public: &mut [u8]) -> Vec<u8> {
    let p = CK_ECDH1_DERIVE_PARAMS {
        kdf,
        ulSharedDataLen: shared.len() as CK_ULONG,
        pSharedData: if shared.is_empty() {
            null_mut()
        } else {
            shared.as_mut_ptr()
        },
        ulPublicDataLen: public.len() as CK_ULONG,
        pPublicData: if public.is_empty() {
            null_mut()
        } else {
            public.as_mut_ptr()
        },
    };
    struct_bytes(&p)
}

#[test]
fn every_function_answers_hostile_arguments_with_the_spec_code() {
    let mut v = Vec::new();
    session_cases(&mut v);
    object_cases(&mut v);
    argument_cases(&mut v);
    let n = v.len();
    let covered = run_table(v);
    let missing: Vec<_> = ALL_FUNCTIONS
        .iter()
        .filter(|f| !covered.contains(*f))
        .collect();
    assert!(
        missing.is_empty(),
        "functions without a hostile case: {missing:?}"
    );
    assert_eq!(ALL_FUNCTIONS.len(), 70);
    println!("{n} cases over {} functions", covered.len());
}

// ---- mechanism parameters -------------------------------------------------------------

/// Which init a parameter case runs, and with which key.
#[derive(Clone, Copy)]
enum Init {
    Encrypt,
    Sign,
    Derive,
}

/// Run an init with the given parameter bytes; cancel whatever began.
fn init_with(
    e: &Env,
    s: CK_SESSION_HANDLE,
    kind: Init,
    m: CK_MECHANISM_TYPE,
    param: Option<&mut [u8]>,
    len: Option<CK_ULONG>,
) -> CK_RV {
    let mut mm = match param {
        Some(p) => mech_with(m, p),
        None => CK_MECHANISM {
            mechanism: m,
            pParameter: null_mut(),
            ulParameterLen: 0,
        },
    };
    if let Some(l) = len {
        assert!(
            mm.pParameter.is_null() || l <= mm.ulParameterLen,
            "test bug: length beyond buffer"
        );
        mm.ulParameterLen = l;
    }
    match kind {
        Init::Encrypt => {
            let key = match m {
                CKM_RSA_PKCS_OAEP => e.rsa_pub,
                _ => e.aes,
            };
            call!(e.f, C_EncryptInit, s, &mut mm, key)
        }
        Init::Sign => call!(e.f, C_SignInit, s, &mut mm, e.rsa_priv),
        Init::Derive => {
            let mut t = Tpl::new()
                .ulong(CKA_CLASS, CKO_SECRET_KEY)
                .ulong(CKA_KEY_TYPE, CKK_AES)
                .ulong(CKA_VALUE_LEN, 16);
            let mut o = 0;
            let rv = call!(
                e.f,
                C_DeriveKey,
                s,
                &mut mm,
                e.ec_priv,
                t.c(),
                t.n(),
                &mut o
            );
            if rv == CKR_OK {
                destroy(e.f, s, o);
            }
            rv
        }
    }
}

/// Sizes around a struct's size: truncated, oversized, tiny.
fn bad_sizes(size: usize) -> Vec<usize> {
    vec![1, size / 2, size - 1, size + 1, size + 8, 4 * size]
}

#[test]
fn mechanism_parameter_structs_truncated_oversized_and_malformed() {
    let e = env();
    const MPI: CK_RV = CKR_MECHANISM_PARAM_INVALID;
    let mut failures = Vec::new();
    let mut check = |what: String, got: CK_RV, allowed: &[CK_RV]| {
        if allowed.contains(&got) {
            println!("ok  {what} -> {}", rv_name(got));
        } else {
            failures.push(format!(
                "{what}: got {}, expected {:?}",
                rv_name(got),
                allowed.iter().map(|r| rv_name(*r)).collect::<Vec<_>>()
            ));
        }
    };
    let mut iv = [7u8; 12];
    let mut aad = [1u8; 5];
    let gcm = CK_GCM_PARAMS {
        pIv: iv.as_mut_ptr(),
        ulIvLen: 12,
        ulIvBits: 96,
        pAAD: aad.as_mut_ptr(),
        ulAADLen: 5,
        ulTagBits: 128,
    };
    let pss = CK_RSA_PKCS_PSS_PARAMS {
        hashAlg: CKM_SHA256,
        mgf: CKG_MGF1_SHA256,
        sLen: 32,
    };
    let mut label = *b"label";
    let oaep = CK_RSA_PKCS_OAEP_PARAMS {
        hashAlg: CKM_SHA256,
        mgf: CKG_MGF1_SHA256,
        source: CKZ_DATA_SPECIFIED,
        pSourceData: label.as_mut_ptr() as CK_VOID_PTR,
        ulSourceDataLen: 5,
    };
    // A valid peer point: the token's own EC public key (ECDH with it is legitimate).
    let s0 = open(e.f, true);
    let (rv, point, _) = get_attr(e.f, s0, e.ec_pub, CKA_EC_POINT);
    expect_rv("EC point", rv, CKR_OK);
    let mut point = point.unwrap();
    let ecdh = CK_ECDH1_DERIVE_PARAMS {
        kdf: CKD_SHA256_KDF,
        ulSharedDataLen: 0,
        pSharedData: null_mut(),
        ulPublicDataLen: point.len() as CK_ULONG,
        pPublicData: point.as_mut_ptr(),
    };
    let ctr = CK_AES_CTR_PARAMS {
        ulCounterBits: 32,
        cb: [0u8; 16],
    };
    let structs: Vec<(&str, CK_MECHANISM_TYPE, Init, Vec<u8>)> = vec![
        (
            "CK_GCM_PARAMS",
            CKM_AES_GCM,
            Init::Encrypt,
            struct_bytes(&gcm),
        ),
        (
            "CK_RSA_PKCS_PSS_PARAMS",
            CKM_SHA256_RSA_PKCS_PSS,
            Init::Sign,
            struct_bytes(&pss),
        ),
        (
            "CK_RSA_PKCS_OAEP_PARAMS",
            CKM_RSA_PKCS_OAEP,
            Init::Encrypt,
            struct_bytes(&oaep),
        ),
        (
            "CK_ECDH1_DERIVE_PARAMS",
            CKM_ECDH1_DERIVE,
            Init::Derive,
            struct_bytes(&ecdh),
        ),
        (
            "CK_AES_CTR_PARAMS",
            CKM_AES_CTR,
            Init::Encrypt,
            struct_bytes(&ctr),
        ),
    ];
    for (name, m, kind, good) in &structs {
        let size = good.len();
        // The exact struct works (the baseline: otherwise the failures below prove nothing).
        let s = open(e.f, true);
        let mut b = good.clone();
        check(
            format!("{name} exact size"),
            init_with(e, s, *kind, *m, Some(&mut b), None),
            &[CKR_OK],
        );
        close(e.f, s);
        // Misaligned: the same struct at an odd address must be read correctly.
        let s = open(e.f, true);
        let mut b = vec![0u8; size + 1];
        b[1..].copy_from_slice(good);
        check(
            format!("{name} at an odd address"),
            init_with(e, s, *kind, *m, Some(&mut b[1..]), None),
            &[CKR_OK],
        );
        close(e.f, s);
        for n in bad_sizes(size) {
            // CK_GCM_PARAMS without ulIvBits (40 bytes) is an accepted older layout.
            if *m == CKM_AES_GCM && n == size - 8 {
                continue;
            }
            let s = open(e.f, true);
            // A buffer of exactly n bytes: the struct, truncated or zero-padded.
            let mut b = vec![0u8; n];
            let k = n.min(size);
            b[..k].copy_from_slice(&good[..k]);
            check(
                format!("{name} of {n} bytes (struct is {size})"),
                init_with(e, s, *kind, *m, Some(&mut b), None),
                &[MPI],
            );
            close(e.f, s);
        }
        // NULL parameter with the struct's length, and with a huge length.
        for len in [size as CK_ULONG, HUGE] {
            let s = open(e.f, true);
            check(
                format!("{name}: NULL pointer, length {len}"),
                init_with(e, s, *kind, *m, None, Some(len)),
                &[MPI],
            );
            close(e.f, s);
        }
    }
    // Field-level damage, one field at a time.
    type Damage = Box<dyn Fn(&mut Vec<u8>)>;
    /// Read the struct out of its bytes, change one field, write it back.
    fn dmg<T: Copy + 'static>(change: impl Fn(&mut T) + 'static) -> Damage {
        Box::new(move |b: &mut Vec<u8>| {
            // SAFETY: `b` holds exactly one T (the `good` bytes of that struct).
            let mut p: T = unsafe { std::ptr::read_unaligned(b.as_ptr() as *const T) };
            change(&mut p);
            b.copy_from_slice(&struct_bytes(&p));
        })
    }
    let ivp = iv.as_mut_ptr() as usize;
    use Init::{Derive as D, Encrypt as E, Sign as S};
    const GCM: CK_MECHANISM_TYPE = CKM_AES_GCM;
    const PSS: CK_MECHANISM_TYPE = CKM_SHA256_RSA_PKCS_PSS;
    const OAEP: CK_MECHANISM_TYPE = CKM_RSA_PKCS_OAEP;
    const ECDH: CK_MECHANISM_TYPE = CKM_ECDH1_DERIVE;
    const CTR: CK_MECHANISM_TYPE = CKM_AES_CTR;
    type G = CK_GCM_PARAMS;
    type P = CK_RSA_PKCS_PSS_PARAMS;
    type O = CK_RSA_PKCS_OAEP_PARAMS;
    type X = CK_ECDH1_DERIVE_PARAMS;
    type C = CK_AES_CTR_PARAMS;
    #[rustfmt::skip]
    let damaged: Vec<(&str, CK_MECHANISM_TYPE, Init, CK_RV, Damage)> = vec![
        ("GCM: NULL IV, huge length", GCM, E, MPI, dmg(|p: &mut G| { p.pIv = null_mut(); p.ulIvLen = HUGE; })),
        ("GCM: IV length 0", GCM, E, MPI, dmg(|p: &mut G| p.ulIvLen = 0)),
        ("GCM: NULL AAD, huge length", GCM, E, MPI, dmg(|p: &mut G| { p.pAAD = null_mut(); p.ulAADLen = HUGE; })),
        ("GCM: tag of 0 bits", GCM, E, MPI, dmg(|p: &mut G| p.ulTagBits = 0)),
        ("GCM: tag of 2^40 bits", GCM, E, MPI, dmg(|p: &mut G| p.ulTagBits = HUGE)),
        // CK_ULONG fields must not be truncated to 32 bits: 2^32 + 128 is not 128.
        ("GCM: tag of 2^32+128 bits", GCM, E, MPI, dmg(|p: &mut G| p.ulTagBits = (1 << 32) + 128)),
        ("PSS: unknown hash", PSS, S, MPI, dmg(|p: &mut P| p.hashAlg = 0x7fff_0001)),
        ("PSS: hash contradicts the mechanism", PSS, S, MPI, dmg(|p: &mut P| p.hashAlg = CKM_SHA_1)),
        ("PSS: unknown MGF", PSS, S, MPI, dmg(|p: &mut P| p.mgf = 0x7fff_0001)),
        ("PSS: salt of 2^40 bytes", PSS, S, MPI, dmg(|p: &mut P| p.sLen = HUGE)),
        ("OAEP: unknown source", OAEP, E, MPI, dmg(|p: &mut O| p.source = 0x7777)),
        ("OAEP: NULL source data, huge length", OAEP, E, MPI, dmg(|p: &mut O| { p.pSourceData = null_mut(); p.ulSourceDataLen = HUGE; })),
        ("OAEP: unknown hash", OAEP, E, MPI, dmg(|p: &mut O| p.hashAlg = 0x7fff_0002)),
        ("OAEP: unknown MGF", OAEP, E, MPI, dmg(|p: &mut O| p.mgf = 0x7fff_0002)),
        ("ECDH: unknown KDF", ECDH, D, MPI, dmg(|p: &mut X| p.kdf = 0x7777)),
        ("ECDH: NULL public data, huge length", ECDH, D, MPI, dmg(|p: &mut X| { p.pPublicData = null_mut(); p.ulPublicDataLen = HUGE; })),
        ("ECDH: empty public data", ECDH, D, MPI, dmg(|p: &mut X| p.ulPublicDataLen = 0)),
        ("ECDH: public data shorter than a point", ECDH, D, MPI, dmg(|p: &mut X| p.ulPublicDataLen = 20)),
        ("ECDH: NULL shared data, huge length", ECDH, D, MPI, dmg(|p: &mut X| { p.pSharedData = null_mut(); p.ulSharedDataLen = HUGE; })),
        ("ECDH: CKD_NULL with shared data", ECDH, D, MPI, dmg(move |p: &mut X| { p.kdf = CKD_NULL; p.pSharedData = ivp as *mut u8; p.ulSharedDataLen = 4; })),
        ("CTR: counter of 0 bits", CTR, E, MPI, dmg(|p: &mut C| p.ulCounterBits = 0)),
        ("CTR: counter of 129 bits", CTR, E, MPI, dmg(|p: &mut C| p.ulCounterBits = 129)),
        ("CTR: counter of 2^32+32 bits", CTR, E, MPI, dmg(|p: &mut C| p.ulCounterBits = (1 << 32) + 32)),
        ("CTR: counter of 2^40 bits", CTR, E, MPI, dmg(|p: &mut C| p.ulCounterBits = HUGE)),
    ];
    for (what, m, kind, want, damage) in damaged {
        let good = &structs.iter().find(|(_, mm, _, _)| *mm == m).unwrap().3;
        let mut b = good.clone();
        damage(&mut b);
        let s = open(e.f, true);
        check(
            what.to_string(),
            init_with(e, s, kind, m, Some(&mut b), None),
            &[want],
        );
        close(e.f, s);
    }
    // Simple parameters: IVs of the wrong size.
    for (what, m, n) in [
        ("AES_CBC IV of 15 bytes", CKM_AES_CBC, 15usize),
        ("AES_CBC IV of 17 bytes", CKM_AES_CBC, 17),
        ("AES_CBC_PAD without IV", CKM_AES_CBC_PAD, 0),
        ("AES_KEY_WRAP IV of 7 bytes", CKM_AES_KEY_WRAP, 7),
        ("AES_KEY_WRAP_PAD IV of 8 bytes", CKM_AES_KEY_WRAP_PAD, 8),
    ] {
        let s = open(e.f, true);
        let mut b = vec![0xa6u8; n];
        let got = if matches!(m, CKM_AES_KEY_WRAP | CKM_AES_KEY_WRAP_PAD) {
            let mut mm = if n == 0 {
                mech(m)
            } else {
                mech_with(m, &mut b)
            };
            let mut l = 0;
            call!(
                e.f,
                C_WrapKey,
                s,
                &mut mm,
                e.aes,
                e.hmac,
                null_mut(),
                &mut l
            )
        } else {
            init_with(
                e,
                s,
                Init::Encrypt,
                m,
                if n == 0 { None } else { Some(&mut b) },
                None,
            )
        };
        check(what.to_string(), got, &[MPI]);
        close(e.f, s);
    }
    // Parameters for mechanisms that take none are ignored or refused, never read
    // beyond the length (here: a NULL pointer with a huge length).
    let s = open(e.f, true);
    let mut mm = CK_MECHANISM {
        mechanism: CKM_SHA256,
        pParameter: null_mut(),
        ulParameterLen: HUGE,
    };
    check(
        "SHA256 with NULL parameter, huge length".into(),
        call!(e.f, C_DigestInit, s, &mut mm),
        &[MPI],
    );
    close(e.f, s);
    close(e.f, s0);
    assert!(
        failures.is_empty(),
        "{} parameter cases failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

// ---- templates ------------------------------------------------------------------------

#[test]
fn templates_with_duplicate_unknown_contradictory_and_missized_attributes() {
    let e = env();
    const TI: CK_RV = CKR_TEMPLATE_INCONSISTENT;
    const TYI: CK_RV = CKR_ATTRIBUTE_TYPE_INVALID;
    const VI: CK_RV = CKR_ATTRIBUTE_VALUE_INVALID;
    const RO: CK_RV = CKR_ATTRIBUTE_READ_ONLY;
    let key32 = [0x42u8; 32];
    let data = || Tpl::new().ulong(CKA_CLASS, CKO_DATA);
    let secret = || {
        Tpl::new()
            .ulong(CKA_CLASS, CKO_SECRET_KEY)
            .ulong(CKA_KEY_TYPE, CKK_AES)
            .bytes(CKA_VALUE, &key32)
    };
    // (what, template, allowed)
    let create: Vec<(&str, Tpl, Vec<CK_RV>)> = vec![
        (
            "duplicate CKA_LABEL",
            data().bytes(CKA_LABEL, b"a").bytes(CKA_LABEL, b"b"),
            vec![TI],
        ),
        (
            "duplicate CKA_LABEL, same value",
            data().bytes(CKA_LABEL, b"a").bytes(CKA_LABEL, b"a"),
            vec![TI],
        ),
        (
            "CKA_CLASS twice, different values",
            data().ulong(CKA_CLASS, CKO_SECRET_KEY),
            vec![TI],
        ),
        (
            "CKA_KEY_TYPE twice",
            secret().ulong(CKA_KEY_TYPE, CKK_GENERIC_SECRET),
            vec![TI],
        ),
        (
            "unknown attribute type",
            data().bytes(0x7777_0000, b"?"),
            vec![TYI],
        ),
        (
            "vendor attribute of the module on a data object",
            data().bytes(0xC34B_0001, b"?"),
            vec![TYI],
        ),
        (
            "CKA_MODULUS on a data object",
            data().bytes(CKA_MODULUS, &[1, 2, 3]),
            vec![TYI],
        ),
        (
            "CKA_EC_PARAMS on a secret key",
            secret().bytes(CKA_EC_PARAMS, P256_OID),
            vec![TYI],
        ),
        (
            "CK_BBOOL of 4 bytes",
            data().bytes(CKA_TOKEN, &[0, 0, 0, 0]),
            vec![VI],
        ),
        (
            "CK_BBOOL of 0 bytes",
            data().bytes(CKA_PRIVATE, &[]),
            vec![VI],
        ),
        (
            "CK_ULONG CKA_CLASS of 1 byte",
            Tpl::new().bytes(CKA_CLASS, &[0]),
            vec![VI],
        ),
        (
            "CK_ULONG CKA_CLASS of 4 bytes",
            Tpl::new().bytes(CKA_CLASS, &[0, 0, 0, 0]),
            vec![VI],
        ),
        (
            "CK_ULONG CKA_VALUE_LEN of 3 bytes",
            secret().bytes(CKA_VALUE_LEN, &[32, 0, 0]),
            vec![VI],
        ),
        // NULL with a non-zero length: no code is specified for it; either fits.
        (
            "CKA_LABEL: NULL value, huge length",
            data().null(CKA_LABEL, HUGE),
            vec![VI, CKR_ARGUMENTS_BAD],
        ),
        (
            "CKA_LABEL: NULL value, length 5",
            data().null(CKA_LABEL, 5),
            vec![VI, CKR_ARGUMENTS_BAD],
        ),
        (
            "no CKA_CLASS",
            Tpl::new().bytes(CKA_LABEL, b"x"),
            vec![CKR_TEMPLATE_INCOMPLETE],
        ),
        (
            "vendor-defined class",
            Tpl::new().ulong(CKA_CLASS, CKO_VENDOR_DEFINED | 7),
            vec![VI],
        ),
        (
            "unknown key type",
            Tpl::new()
                .ulong(CKA_CLASS, CKO_SECRET_KEY)
                .ulong(CKA_KEY_TYPE, 0x7777)
                .bytes(CKA_VALUE, &key32),
            vec![VI, CKR_TEMPLATE_INCONSISTENT],
        ),
        (
            "secret key without CKA_VALUE",
            Tpl::new()
                .ulong(CKA_CLASS, CKO_SECRET_KEY)
                .ulong(CKA_KEY_TYPE, CKK_AES),
            vec![CKR_TEMPLATE_INCOMPLETE],
        ),
        (
            "CKA_VALUE_LEN contradicts CKA_VALUE",
            secret().ulong(CKA_VALUE_LEN, 16),
            vec![TI],
        ),
        // An AES value of 7 bytes: the value is invalid; KEY_SIZE_RANGE says the same.
        (
            "AES CKA_VALUE of 7 bytes",
            Tpl::new()
                .ulong(CKA_CLASS, CKO_SECRET_KEY)
                .ulong(CKA_KEY_TYPE, CKK_AES)
                .bytes(CKA_VALUE, &[1; 7]),
            vec![VI, CKR_KEY_SIZE_RANGE],
        ),
        (
            "token secret key from a template (only generated CMKs)",
            secret().bool(CKA_TOKEN, true),
            vec![TI],
        ),
        // Attributes only the token sets: "may not be set by the application" is
        // ATTRIBUTE_READ_ONLY (v2.40 §5.1.5); TEMPLATE_INCONSISTENT is also used.
        (
            "CKA_LOCAL given",
            secret().bool(CKA_LOCAL, true),
            vec![RO, TI],
        ),
        (
            "CKA_ALWAYS_SENSITIVE given",
            secret().bool(CKA_ALWAYS_SENSITIVE, true),
            vec![RO, TI],
        ),
        (
            "CKA_NEVER_EXTRACTABLE given",
            secret().bool(CKA_NEVER_EXTRACTABLE, true),
            vec![RO, TI],
        ),
        (
            "CKA_KEY_GEN_MECHANISM given",
            secret().ulong(CKA_KEY_GEN_MECHANISM, CKM_AES_KEY_GEN),
            vec![RO, TI],
        ),
    ];
    let mut failures = Vec::new();
    for (what, mut t, allowed) in create {
        let s = open(e.f, true);
        let mut o = 0;
        let got = call!(e.f, C_CreateObject, s, t.c(), t.n(), &mut o);
        if allowed.contains(&got) {
            println!("ok  C_CreateObject [{what}] -> {}", rv_name(got));
        } else {
            failures.push(format!(
                "C_CreateObject [{what}]: got {}, expected {:?}",
                rv_name(got),
                allowed.iter().map(|r| rv_name(*r)).collect::<Vec<_>>()
            ));
        }
        close(e.f, s);
    }
    let aes_gen = |t: Tpl| t.ulong(CKA_VALUE_LEN, 32);
    let generate: Vec<(&str, Tpl, Vec<CK_RV>)> = vec![
        (
            "token key, SENSITIVE=FALSE",
            aes_gen(Tpl::new().bool(CKA_TOKEN, true).bool(CKA_SENSITIVE, false)),
            vec![VI],
        ),
        (
            "token key, EXTRACTABLE=TRUE",
            aes_gen(Tpl::new().bool(CKA_TOKEN, true).bool(CKA_EXTRACTABLE, true)),
            vec![VI],
        ),
        (
            "token key, COPYABLE=TRUE",
            aes_gen(Tpl::new().bool(CKA_TOKEN, true).bool(CKA_COPYABLE, true)),
            vec![VI],
        ),
        (
            "duplicate CKA_TOKEN (TRUE, FALSE)",
            aes_gen(Tpl::new().bool(CKA_TOKEN, true).bool(CKA_TOKEN, false)),
            vec![TI],
        ),
        (
            "CKA_CLASS = CKO_DATA",
            aes_gen(Tpl::new().ulong(CKA_CLASS, CKO_DATA)),
            vec![TI],
        ),
        (
            "CKA_KEY_TYPE = CKK_RSA with CKM_AES_KEY_GEN",
            aes_gen(Tpl::new().ulong(CKA_KEY_TYPE, CKK_RSA)),
            vec![TI],
        ),
        (
            "CKA_VALUE given",
            aes_gen(Tpl::new().bytes(CKA_VALUE, &key32)),
            vec![TI, RO],
        ),
        (
            "CKA_ENCRYPT of 8 bytes",
            aes_gen(Tpl::new().bytes(CKA_ENCRYPT, &[1; 8])),
            vec![VI],
        ),
        (
            "CKA_VALUE_LEN of 2 bytes",
            Tpl::new().bytes(CKA_VALUE_LEN, &[32, 0]),
            vec![VI],
        ),
        (
            "unknown attribute",
            aes_gen(Tpl::new().bytes(0x7777_0002, &[1])),
            vec![TYI],
        ),
        (
            "CKA_MODULUS_BITS on a secret key",
            aes_gen(Tpl::new().ulong(CKA_MODULUS_BITS, 2048)),
            vec![TYI],
        ),
    ];
    for (what, mut t, allowed) in generate {
        let s = open(e.f, true);
        let mut m = mech(CKM_AES_KEY_GEN);
        let mut o = 0;
        let got = call!(e.f, C_GenerateKey, s, &mut m, t.c(), t.n(), &mut o);
        if allowed.contains(&got) {
            println!("ok  C_GenerateKey [{what}] -> {}", rv_name(got));
        } else {
            failures.push(format!(
                "C_GenerateKey [{what}]: got {}, expected {:?}",
                rv_name(got),
                allowed.iter().map(|r| rv_name(*r)).collect::<Vec<_>>()
            ));
        }
        close(e.f, s);
    }
    let pairs: Vec<(&str, Tpl, Tpl, Vec<CK_RV>)> = vec![
        (
            "token private key, SENSITIVE=FALSE",
            Tpl::new()
                .bool(CKA_TOKEN, true)
                .bytes(CKA_EC_PARAMS, P256_OID),
            Tpl::new().bool(CKA_TOKEN, true).bool(CKA_SENSITIVE, false),
            vec![VI],
        ),
        (
            "token private key, EXTRACTABLE=TRUE",
            Tpl::new()
                .bool(CKA_TOKEN, true)
                .bytes(CKA_EC_PARAMS, P256_OID),
            Tpl::new().bool(CKA_TOKEN, true).bool(CKA_EXTRACTABLE, true),
            vec![VI],
        ),
        (
            "duplicate CKA_EC_PARAMS",
            Tpl::new()
                .bytes(CKA_EC_PARAMS, P256_OID)
                .bytes(CKA_EC_PARAMS, P256_OID),
            Tpl::new(),
            vec![TI],
        ),
        (
            "unknown attribute in the private template",
            Tpl::new().bytes(CKA_EC_PARAMS, P256_OID),
            Tpl::new().bytes(0x7777_0003, &[1]),
            vec![TYI],
        ),
        (
            "CK_BBOOL of 2 bytes in the private template",
            Tpl::new().bytes(CKA_EC_PARAMS, P256_OID),
            Tpl::new().bytes(CKA_SIGN, &[1, 1]),
            vec![VI],
        ),
        (
            "CKA_CLASS = public in the private template",
            Tpl::new().bytes(CKA_EC_PARAMS, P256_OID),
            Tpl::new().ulong(CKA_CLASS, CKO_PUBLIC_KEY),
            vec![TI],
        ),
    ];
    for (what, mut pt, mut st, allowed) in pairs {
        let s = open(e.f, true);
        let mut m = mech(CKM_EC_KEY_PAIR_GEN);
        let (mut a, mut b) = (0, 0);
        let got = call!(
            e.f,
            C_GenerateKeyPair,
            s,
            &mut m,
            pt.c(),
            pt.n(),
            st.c(),
            st.n(),
            &mut a,
            &mut b
        );
        if allowed.contains(&got) {
            println!("ok  C_GenerateKeyPair [{what}] -> {}", rv_name(got));
        } else {
            failures.push(format!(
                "C_GenerateKeyPair [{what}]: got {}, expected {:?}",
                rv_name(got),
                allowed.iter().map(|r| rv_name(*r)).collect::<Vec<_>>()
            ));
        }
        close(e.f, s);
    }
    // C_SetAttributeValue on a session key of our own.
    let s = open(e.f, true);
    let k = aes_key(e.f, s, false);
    let set: Vec<(&str, Tpl, Vec<CK_RV>)> = vec![
        (
            "duplicate CKA_LABEL",
            Tpl::new().bytes(CKA_LABEL, b"a").bytes(CKA_LABEL, b"b"),
            vec![TI],
        ),
        (
            "unknown attribute",
            Tpl::new().bytes(0x7777_0004, b"a"),
            vec![TYI],
        ),
        (
            "CKA_MODULUS on a secret key",
            Tpl::new().bytes(CKA_MODULUS, b"a"),
            vec![TYI],
        ),
        (
            "CK_BBOOL of 4 bytes",
            Tpl::new().bytes(CKA_ENCRYPT, &[1, 0, 0, 0]),
            vec![VI],
        ),
        ("CKA_CLASS", Tpl::new().ulong(CKA_CLASS, CKO_DATA), vec![RO]),
        (
            "CKA_KEY_TYPE",
            Tpl::new().ulong(CKA_KEY_TYPE, CKK_GENERIC_SECRET),
            vec![RO],
        ),
        (
            "CKA_VALUE_LEN",
            Tpl::new().ulong(CKA_VALUE_LEN, 16),
            vec![RO],
        ),
        (
            "CKA_SENSITIVE TRUE -> FALSE",
            Tpl::new().bool(CKA_SENSITIVE, false),
            vec![RO],
        ),
        ("CKA_LOCAL", Tpl::new().bool(CKA_LOCAL, false), vec![RO]),
        (
            "CKA_ALWAYS_SENSITIVE",
            Tpl::new().bool(CKA_ALWAYS_SENSITIVE, false),
            vec![RO],
        ),
        (
            "CKA_TOKEN (copy only)",
            Tpl::new().bool(CKA_TOKEN, true),
            vec![RO],
        ),
        ("CKA_VALUE", Tpl::new().bytes(CKA_VALUE, &key32), vec![RO]),
    ];
    for (what, t, allowed) in set {
        let got = set_attrs(e.f, s, k, t);
        if allowed.contains(&got) {
            println!("ok  C_SetAttributeValue [{what}] -> {}", rv_name(got));
        } else {
            failures.push(format!(
                "C_SetAttributeValue [{what}]: got {}, expected {:?}",
                rv_name(got),
                allowed.iter().map(|r| rv_name(*r)).collect::<Vec<_>>()
            ));
        }
    }
    // All or nothing: a template with one bad entry changes nothing.
    let got = set_attrs(
        e.f,
        s,
        k,
        Tpl::new()
            .bytes(CKA_LABEL, b"changed")
            .bool(CKA_SENSITIVE, false),
    );
    expect_rv("C_SetAttributeValue with one bad entry", got, RO);
    let (_, label, _) = get_attr(e.f, s, k, CKA_LABEL);
    assert_ne!(
        label.as_deref(),
        Some(&b"changed"[..]),
        "a refused template must change nothing"
    );
    close(e.f, s);
    assert!(
        failures.is_empty(),
        "{} template cases failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

// ---- calls out of order ---------------------------------------------------------------

#[test]
fn calls_out_of_order() {
    let e = env();
    const NI: CK_RV = CKR_OPERATION_NOT_INITIALIZED;
    const OA: CK_RV = CKR_OPERATION_ACTIVE;
    let f = e.f;
    let data = [0x11u8; 32];
    let dp = data.as_ptr() as CK_BYTE_PTR;
    let mut failures = Vec::new();
    let mut check = |what: &str, got: CK_RV, want: CK_RV| {
        if got == want {
            println!("ok  [{what}] -> {}", rv_name(got));
        } else {
            failures.push(format!(
                "[{what}]: got {}, expected {}",
                rv_name(got),
                rv_name(want)
            ));
        }
    };
    let s = open(f, true);
    let mut l: CK_ULONG = 0;
    let mut out = [0u8; 512];
    let mut hs = [0 as CK_OBJECT_HANDLE; 4];
    check(
        "C_Sign without C_SignInit",
        call!(f, C_Sign, s, dp, 32, null_mut(), &mut l),
        NI,
    );
    check(
        "C_SignUpdate without C_SignInit",
        call!(f, C_SignUpdate, s, dp, 32),
        NI,
    );
    check(
        "C_SignFinal without C_SignInit",
        call!(f, C_SignFinal, s, null_mut(), &mut l),
        NI,
    );
    check(
        "C_Verify without C_VerifyInit",
        call!(f, C_Verify, s, dp, 32, dp, 32),
        NI,
    );
    check(
        "C_VerifyUpdate without C_VerifyInit",
        call!(f, C_VerifyUpdate, s, dp, 32),
        NI,
    );
    check(
        "C_VerifyFinal without C_VerifyInit",
        call!(f, C_VerifyFinal, s, dp, 32),
        NI,
    );
    check(
        "C_Encrypt without C_EncryptInit",
        call!(f, C_Encrypt, s, dp, 32, null_mut(), &mut l),
        NI,
    );
    check(
        "C_EncryptUpdate without C_EncryptInit",
        call!(f, C_EncryptUpdate, s, dp, 32, null_mut(), &mut l),
        NI,
    );
    check(
        "C_EncryptFinal without C_EncryptInit",
        call!(f, C_EncryptFinal, s, null_mut(), &mut l),
        NI,
    );
    check(
        "C_Decrypt without C_DecryptInit",
        call!(f, C_Decrypt, s, dp, 32, null_mut(), &mut l),
        NI,
    );
    check(
        "C_DecryptUpdate without C_DecryptInit",
        call!(f, C_DecryptUpdate, s, dp, 32, null_mut(), &mut l),
        NI,
    );
    check(
        "C_DecryptFinal without C_DecryptInit",
        call!(f, C_DecryptFinal, s, null_mut(), &mut l),
        NI,
    );
    check(
        "C_Digest without C_DigestInit",
        call!(f, C_Digest, s, dp, 32, null_mut(), &mut l),
        NI,
    );
    check(
        "C_DigestUpdate without C_DigestInit",
        call!(f, C_DigestUpdate, s, dp, 32),
        NI,
    );
    check(
        "C_DigestKey without C_DigestInit",
        call!(f, C_DigestKey, s, e.aes),
        NI,
    );
    check(
        "C_DigestFinal without C_DigestInit",
        call!(f, C_DigestFinal, s, null_mut(), &mut l),
        NI,
    );
    check(
        "C_FindObjects without C_FindObjectsInit",
        call!(f, C_FindObjects, s, hs.as_mut_ptr(), 1, &mut l),
        NI,
    );
    check(
        "C_FindObjectsFinal without C_FindObjectsInit",
        call!(f, C_FindObjectsFinal, s),
        NI,
    );

    // A second init while one is active.
    let mut hm = mech(CKM_SHA256_HMAC);
    check(
        "C_SignInit",
        call!(f, C_SignInit, s, &mut hm, e.hmac),
        CKR_OK,
    );
    check(
        "second C_SignInit",
        call!(f, C_SignInit, s, &mut hm, e.hmac),
        OA,
    );
    let mut em = mech(CKM_AES_ECB);
    check(
        "C_EncryptInit while signing",
        call!(f, C_EncryptInit, s, &mut em, e.aes),
        OA,
    );
    let mut dm = mech(CKM_SHA256);
    check(
        "C_DigestInit while signing",
        call!(f, C_DigestInit, s, &mut dm),
        OA,
    );
    check(
        "C_Encrypt while signing",
        call!(f, C_Encrypt, s, dp, 32, null_mut(), &mut l),
        NI,
    );
    // The sign operation survived all that.
    let mut sl: CK_ULONG = 1;
    check(
        "C_Sign with a 1-byte buffer",
        call!(f, C_Sign, s, dp, 32, out.as_mut_ptr(), &mut sl),
        CKR_BUFFER_TOO_SMALL,
    );
    assert_eq!(sl, 32);
    sl = 512;
    check(
        "C_Sign again with room",
        call!(f, C_Sign, s, dp, 32, out.as_mut_ptr(), &mut sl),
        CKR_OK,
    );
    check(
        "C_Sign after completion",
        call!(f, C_Sign, s, dp, 32, out.as_mut_ptr(), &mut sl),
        NI,
    );
    check(
        "C_SignFinal after completion",
        call!(f, C_SignFinal, s, out.as_mut_ptr(), &mut sl),
        NI,
    );

    // Multi-part then single-part.
    check(
        "C_EncryptInit",
        call!(f, C_EncryptInit, s, &mut em, e.aes),
        CKR_OK,
    );
    l = 512;
    check(
        "C_EncryptUpdate",
        call!(f, C_EncryptUpdate, s, dp, 16, out.as_mut_ptr(), &mut l),
        CKR_OK,
    );
    l = 512;
    // A multi-part operation cannot be finished by the single-part function (the spec
    // does not name the code; this module says the operation is active).
    check(
        "C_Encrypt during a multi-part encryption",
        call!(f, C_Encrypt, s, dp, 16, out.as_mut_ptr(), &mut l),
        OA,
    );
    l = 512;
    check(
        "C_EncryptFinal after the failed C_Encrypt",
        call!(f, C_EncryptFinal, s, out.as_mut_ptr(), &mut l),
        NI,
    );

    // An error other than BUFFER_TOO_SMALL ends the operation.
    let mut ecm = mech(CKM_ECDSA);
    check(
        "C_SignInit ECDSA",
        call!(f, C_SignInit, s, &mut ecm, e.ec_priv),
        CKR_OK,
    );
    sl = 512;
    let big = [0u8; 200];
    let got = call!(
        f,
        C_Sign,
        s,
        big.as_ptr() as CK_BYTE_PTR,
        200,
        out.as_mut_ptr(),
        &mut sl
    );
    if got == CKR_OK {
        println!("note: raw ECDSA accepted a 200-byte input (truncated as X9.62 allows)");
    } else {
        check(
            "C_Sign after a failed C_Sign",
            call!(f, C_Sign, s, dp, 32, out.as_mut_ptr(), &mut sl),
            NI,
        );
    }

    // A bad signature ends the verification.
    check(
        "C_VerifyInit",
        call!(f, C_VerifyInit, s, &mut hm, e.hmac),
        CKR_OK,
    );
    check(
        "C_Verify with a wrong MAC",
        call!(f, C_Verify, s, dp, 32, dp, 32),
        CKR_SIGNATURE_INVALID,
    );
    check(
        "C_VerifyFinal after",
        call!(f, C_VerifyFinal, s, dp, 32),
        NI,
    );

    // Searches.
    check(
        "C_FindObjectsInit",
        call!(f, C_FindObjectsInit, s, null_mut(), 0),
        CKR_OK,
    );
    check(
        "second C_FindObjectsInit",
        call!(f, C_FindObjectsInit, s, null_mut(), 0),
        OA,
    );
    check(
        "C_FindObjectsFinal",
        call!(f, C_FindObjectsFinal, s),
        CKR_OK,
    );
    check(
        "C_FindObjectsFinal twice",
        call!(f, C_FindObjectsFinal, s),
        NI,
    );
    check(
        "C_FindObjects after final",
        call!(f, C_FindObjects, s, hs.as_mut_ptr(), 1, &mut l),
        NI,
    );

    // Digest: C_Digest after C_DigestUpdate.
    check("C_DigestInit", call!(f, C_DigestInit, s, &mut dm), CKR_OK);
    check(
        "C_DigestUpdate",
        call!(f, C_DigestUpdate, s, dp, 32),
        CKR_OK,
    );
    l = 512;
    check(
        "C_Digest during a multi-part digest",
        call!(f, C_Digest, s, dp, 32, out.as_mut_ptr(), &mut l),
        OA,
    );
    close(f, s);

    // A session closed while an operation is active: its handle is gone for good.
    let s = open(f, true);
    check(
        "C_SignInit",
        call!(f, C_SignInit, s, &mut hm, e.hmac),
        CKR_OK,
    );
    close(f, s);
    sl = 512;
    check(
        "C_Sign on the closed session",
        call!(f, C_Sign, s, dp, 32, out.as_mut_ptr(), &mut sl),
        CKR_SESSION_HANDLE_INVALID,
    );
    assert!(
        failures.is_empty(),
        "{} out-of-order cases failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

// ---- before C_Initialize and after C_Finalize (a child process) ------------------------

const CHILD: &str = "CKS_HOSTILE_ABI_CHILD";

/// Every function but C_GetFunctionList/C_Initialize, with harmless arguments.
fn call_everything(f: &CK_FUNCTION_LIST) -> Vec<(&'static str, CK_RV)> {
    let mut l: CK_ULONG = 0;
    let mut h: CK_ULONG = 0;
    let mut h2: CK_ULONG = 0;
    let mut info: CK_INFO = unsafe { std::mem::zeroed() };
    let mut si: CK_SLOT_INFO = unsafe { std::mem::zeroed() };
    let mut ti: CK_TOKEN_INFO = unsafe { std::mem::zeroed() };
    let mut mi: CK_MECHANISM_INFO = unsafe { std::mem::zeroed() };
    let mut ssi: CK_SESSION_INFO = unsafe { std::mem::zeroed() };
    let mut m = mech(CKM_SHA256);
    let mut pin = *b"pin-pin-pin";
    let mut label = [b' '; 32];
    let mut buf = [0u8; 64];
    let b = buf.as_mut_ptr();
    vec![
        ("C_GetInfo", call!(f, C_GetInfo, &mut info)),
        (
            "C_GetSlotList",
            call!(f, C_GetSlotList, 0, null_mut(), &mut l),
        ),
        ("C_GetSlotInfo", call!(f, C_GetSlotInfo, 0, &mut si)),
        ("C_GetTokenInfo", call!(f, C_GetTokenInfo, 0, &mut ti)),
        (
            "C_GetMechanismList",
            call!(f, C_GetMechanismList, 0, null_mut(), &mut l),
        ),
        (
            "C_GetMechanismInfo",
            call!(f, C_GetMechanismInfo, 0, CKM_SHA256, &mut mi),
        ),
        (
            "C_InitToken",
            call!(f, C_InitToken, 0, pin.as_mut_ptr(), 11, label.as_mut_ptr()),
        ),
        ("C_InitPIN", call!(f, C_InitPIN, 1, pin.as_mut_ptr(), 11)),
        (
            "C_SetPIN",
            call!(f, C_SetPIN, 1, pin.as_mut_ptr(), 11, pin.as_mut_ptr(), 11),
        ),
        (
            "C_OpenSession",
            call!(
                f,
                C_OpenSession,
                0,
                CKF_SERIAL_SESSION,
                null_mut(),
                None,
                &mut h
            ),
        ),
        ("C_CloseSession", call!(f, C_CloseSession, 1)),
        ("C_CloseAllSessions", call!(f, C_CloseAllSessions, 0)),
        ("C_GetSessionInfo", call!(f, C_GetSessionInfo, 1, &mut ssi)),
        (
            "C_GetOperationState",
            call!(f, C_GetOperationState, 1, null_mut(), &mut l),
        ),
        (
            "C_SetOperationState",
            call!(f, C_SetOperationState, 1, b, 8, 0, 0),
        ),
        (
            "C_Login",
            call!(f, C_Login, 1, CKU_USER, pin.as_mut_ptr(), 11),
        ),
        ("C_Logout", call!(f, C_Logout, 1)),
        (
            "C_CreateObject",
            call!(f, C_CreateObject, 1, null_mut(), 0, &mut h),
        ),
        (
            "C_CopyObject",
            call!(f, C_CopyObject, 1, 1, null_mut(), 0, &mut h),
        ),
        ("C_DestroyObject", call!(f, C_DestroyObject, 1, 1)),
        ("C_GetObjectSize", call!(f, C_GetObjectSize, 1, 1, &mut l)),
        (
            "C_GetAttributeValue",
            call!(f, C_GetAttributeValue, 1, 1, null_mut(), 0),
        ),
        (
            "C_SetAttributeValue",
            call!(f, C_SetAttributeValue, 1, 1, null_mut(), 0),
        ),
        (
            "C_FindObjectsInit",
            call!(f, C_FindObjectsInit, 1, null_mut(), 0),
        ),
        (
            "C_FindObjects",
            call!(f, C_FindObjects, 1, &mut h, 1, &mut l),
        ),
        ("C_FindObjectsFinal", call!(f, C_FindObjectsFinal, 1)),
        ("C_EncryptInit", call!(f, C_EncryptInit, 1, &mut m, 1)),
        (
            "C_Encrypt",
            call!(f, C_Encrypt, 1, b, 8, null_mut(), &mut l),
        ),
        (
            "C_EncryptUpdate",
            call!(f, C_EncryptUpdate, 1, b, 8, null_mut(), &mut l),
        ),
        (
            "C_EncryptFinal",
            call!(f, C_EncryptFinal, 1, null_mut(), &mut l),
        ),
        ("C_DecryptInit", call!(f, C_DecryptInit, 1, &mut m, 1)),
        (
            "C_Decrypt",
            call!(f, C_Decrypt, 1, b, 8, null_mut(), &mut l),
        ),
        (
            "C_DecryptUpdate",
            call!(f, C_DecryptUpdate, 1, b, 8, null_mut(), &mut l),
        ),
        (
            "C_DecryptFinal",
            call!(f, C_DecryptFinal, 1, null_mut(), &mut l),
        ),
        ("C_DigestInit", call!(f, C_DigestInit, 1, &mut m)),
        ("C_Digest", call!(f, C_Digest, 1, b, 8, null_mut(), &mut l)),
        ("C_DigestUpdate", call!(f, C_DigestUpdate, 1, b, 8)),
        ("C_DigestKey", call!(f, C_DigestKey, 1, 1)),
        (
            "C_DigestFinal",
            call!(f, C_DigestFinal, 1, null_mut(), &mut l),
        ),
        ("C_SignInit", call!(f, C_SignInit, 1, &mut m, 1)),
        ("C_Sign", call!(f, C_Sign, 1, b, 8, null_mut(), &mut l)),
        ("C_SignUpdate", call!(f, C_SignUpdate, 1, b, 8)),
        ("C_SignFinal", call!(f, C_SignFinal, 1, null_mut(), &mut l)),
        (
            "C_SignRecoverInit",
            call!(f, C_SignRecoverInit, 1, &mut m, 1),
        ),
        (
            "C_SignRecover",
            call!(f, C_SignRecover, 1, b, 8, null_mut(), &mut l),
        ),
        ("C_VerifyInit", call!(f, C_VerifyInit, 1, &mut m, 1)),
        ("C_Verify", call!(f, C_Verify, 1, b, 8, b, 8)),
        ("C_VerifyUpdate", call!(f, C_VerifyUpdate, 1, b, 8)),
        ("C_VerifyFinal", call!(f, C_VerifyFinal, 1, b, 8)),
        (
            "C_VerifyRecoverInit",
            call!(f, C_VerifyRecoverInit, 1, &mut m, 1),
        ),
        (
            "C_VerifyRecover",
            call!(f, C_VerifyRecover, 1, b, 8, null_mut(), &mut l),
        ),
        (
            "C_DigestEncryptUpdate",
            call!(f, C_DigestEncryptUpdate, 1, b, 8, null_mut(), &mut l),
        ),
        (
            "C_DecryptDigestUpdate",
            call!(f, C_DecryptDigestUpdate, 1, b, 8, null_mut(), &mut l),
        ),
        (
            "C_SignEncryptUpdate",
            call!(f, C_SignEncryptUpdate, 1, b, 8, null_mut(), &mut l),
        ),
        (
            "C_DecryptVerifyUpdate",
            call!(f, C_DecryptVerifyUpdate, 1, b, 8, null_mut(), &mut l),
        ),
        (
            "C_GenerateKey",
            call!(f, C_GenerateKey, 1, &mut m, null_mut(), 0, &mut h),
        ),
        (
            "C_GenerateKeyPair",
            call!(
                f,
                C_GenerateKeyPair,
                1,
                &mut m,
                null_mut(),
                0,
                null_mut(),
                0,
                &mut h,
                &mut h2
            ),
        ),
        (
            "C_WrapKey",
            call!(f, C_WrapKey, 1, &mut m, 1, 2, null_mut(), &mut l),
        ),
        (
            "C_UnwrapKey",
            call!(f, C_UnwrapKey, 1, &mut m, 1, b, 8, null_mut(), 0, &mut h),
        ),
        (
            "C_DeriveKey",
            call!(f, C_DeriveKey, 1, &mut m, 1, null_mut(), 0, &mut h),
        ),
        ("C_SeedRandom", call!(f, C_SeedRandom, 1, b, 8)),
        ("C_GenerateRandom", call!(f, C_GenerateRandom, 1, b, 8)),
        ("C_GetFunctionStatus", call!(f, C_GetFunctionStatus, 1)),
        ("C_CancelFunction", call!(f, C_CancelFunction, 1)),
        (
            "C_WaitForSlotEvent",
            call!(f, C_WaitForSlotEvent, CKF_DONT_BLOCK, &mut h, null_mut()),
        ),
        ("C_Finalize", call!(f, C_Finalize, null_mut())),
    ]
}

fn child_lifecycle() {
    let r = load_raw();
    let f = r.f;
    let mut failures = Vec::new();
    let mut check = |what: &str, got: CK_RV, allowed: &[CK_RV]| {
        if !allowed.contains(&got) {
            failures.push(format!(
                "{what}: got {}, expected {:?}",
                rv_name(got),
                allowed.iter().map(|r| rv_name(*r)).collect::<Vec<_>>()
            ));
        }
    };
    for (name, rv) in call_everything(f) {
        check(
            &format!("{name} before C_Initialize"),
            rv,
            &[CKR_CRYPTOKI_NOT_INITIALIZED],
        );
    }
    // C_Initialize's own argument checks (v2.40 §5.4).
    let mut a: CK_C_INITIALIZE_ARGS = unsafe { std::mem::zeroed() };
    let mut x = 0u8;
    a.pReserved = &mut x as *mut u8 as CK_VOID_PTR;
    check(
        "C_Initialize pReserved not NULL",
        call!(f, C_Initialize, &mut a as *mut _ as CK_VOID_PTR),
        &[CKR_ARGUMENTS_BAD],
    );
    unsafe extern "C" fn create(_: *mut CK_VOID_PTR) -> CK_RV {
        CKR_OK
    }
    unsafe extern "C" fn other(_: CK_VOID_PTR) -> CK_RV {
        CKR_OK
    }
    let mut a: CK_C_INITIALIZE_ARGS = unsafe { std::mem::zeroed() };
    a.CreateMutex = Some(create);
    check(
        "C_Initialize with one mutex function of four",
        call!(f, C_Initialize, &mut a as *mut _ as CK_VOID_PTR),
        &[CKR_ARGUMENTS_BAD],
    );
    a.DestroyMutex = Some(other);
    a.LockMutex = Some(other);
    a.UnlockMutex = Some(other);
    // The application's mutexes and no CKF_OS_LOCKING_OK: a library that cannot use
    // them answers CANT_LOCK; one that can, OK.
    let rv = call!(f, C_Initialize, &mut a as *mut _ as CK_VOID_PTR);
    check(
        "C_Initialize with application mutexes only",
        rv,
        &[CKR_CANT_LOCK, CKR_OK],
    );
    if rv == CKR_OK {
        call!(f, C_Finalize, null_mut());
    }
    check(
        "C_Initialize",
        call!(f, C_Initialize, null_mut()),
        &[CKR_OK],
    );
    check(
        "C_Initialize again",
        call!(f, C_Initialize, null_mut()),
        &[CKR_CRYPTOKI_ALREADY_INITIALIZED],
    );
    // A fresh token: init it, set the user PIN, log in, make a session key.
    let mut so = *b"so-pin-9876";
    let mut label = [b' '; 32];
    label[..4].copy_from_slice(b"life");
    check(
        "C_InitToken",
        call!(f, C_InitToken, 0, so.as_mut_ptr(), 11, label.as_mut_ptr()),
        &[CKR_OK],
    );
    let s = open(f, true);
    check(
        "C_Logout when nobody is logged in",
        call!(f, C_Logout, s),
        &[CKR_USER_NOT_LOGGED_IN],
    );
    let mut np = *b"user-pin-9876";
    check(
        "C_InitPIN without SO login",
        call!(f, C_InitPIN, s, np.as_mut_ptr(), 13),
        &[CKR_USER_NOT_LOGGED_IN],
    );
    check(
        "C_Login SO",
        call!(f, C_Login, s, CKU_SO, so.as_mut_ptr(), 11),
        &[CKR_OK],
    );
    // SO sessions are R/W only (v2.40 §5.6 C_OpenSession).
    let mut h = 0;
    check(
        "C_OpenSession R/O while the SO is logged in",
        call!(
            f,
            C_OpenSession,
            0,
            CKF_SERIAL_SESSION,
            null_mut(),
            None,
            &mut h
        ),
        &[CKR_SESSION_READ_WRITE_SO_EXISTS],
    );
    check(
        "C_InitPIN",
        call!(f, C_InitPIN, s, np.as_mut_ptr(), 13),
        &[CKR_OK],
    );
    // The SO cannot make keys (v2.40: only the normal user may use private objects).
    let (rv, _) = gen_secret(f, s, CKM_AES_KEY_GEN, Tpl::new().ulong(CKA_VALUE_LEN, 16));
    check("C_GenerateKey as SO", rv, &[CKR_USER_NOT_LOGGED_IN]);
    check("C_Logout", call!(f, C_Logout, s), &[CKR_OK]);
    let (rv, _) = gen_secret(f, s, CKM_AES_KEY_GEN, Tpl::new().ulong(CKA_VALUE_LEN, 16));
    check("C_GenerateKey without login", rv, &[CKR_USER_NOT_LOGGED_IN]);
    check(
        "C_Login user",
        call!(f, C_Login, s, CKU_USER, np.as_mut_ptr(), 13),
        &[CKR_OK],
    );
    let k = aes_key(f, s, false);
    let s2 = open(f, false);
    // C_CloseAllSessions: every session is gone, the user logged out, session objects destroyed.
    check(
        "C_CloseAllSessions",
        call!(f, C_CloseAllSessions, 0),
        &[CKR_OK],
    );
    let mut ssi: CK_SESSION_INFO = unsafe { std::mem::zeroed() };
    check(
        "old session after C_CloseAllSessions",
        call!(f, C_GetSessionInfo, s2, &mut ssi),
        &[CKR_SESSION_HANDLE_INVALID],
    );
    let s3 = open(f, true);
    check(
        "C_GetSessionInfo",
        call!(f, C_GetSessionInfo, s3, &mut ssi),
        &[CKR_OK],
    );
    assert_eq!(
        ssi.state, CKS_RW_PUBLIC_SESSION,
        "closing all sessions logs out"
    );
    let mut em = mech(CKM_AES_ECB);
    check(
        "session key after C_CloseAllSessions",
        call!(f, C_EncryptInit, s3, &mut em, k),
        &[CKR_KEY_HANDLE_INVALID],
    );
    check("C_Finalize", call!(f, C_Finalize, null_mut()), &[CKR_OK]);
    check(
        "C_Finalize again",
        call!(f, C_Finalize, null_mut()),
        &[CKR_CRYPTOKI_NOT_INITIALIZED],
    );
    for (name, rv) in call_everything(f) {
        check(
            &format!("{name} after C_Finalize"),
            rv,
            &[CKR_CRYPTOKI_NOT_INITIALIZED],
        );
    }
    // And the library can be initialised again.
    check(
        "C_Initialize after C_Finalize",
        call!(f, C_Initialize, null_mut()),
        &[CKR_OK],
    );
    let mut ti: CK_TOKEN_INFO = unsafe { std::mem::zeroed() };
    check(
        "C_GetTokenInfo",
        call!(f, C_GetTokenInfo, 0, &mut ti),
        &[CKR_OK],
    );
    check("C_Finalize", call!(f, C_Finalize, null_mut()), &[CKR_OK]);
    assert!(
        failures.is_empty(),
        "{} lifecycle cases failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
    println!("CHILD-OK");
}

#[test]
fn before_initialize_after_finalize_and_initialize_arguments() {
    if std::env::var_os(CHILD).is_some() {
        child_lifecycle();
        return;
    }
    let dir = common::tempdir();
    let cfg = common::write_config(&dir, "");
    let (ok, out) = common::run_child(
        "before_initialize_after_finalize_and_initialize_arguments",
        &[(CHILD, "1"), ("CKS_CONFIG", cfg.to_str().unwrap())],
    );
    assert!(ok && out.contains("CHILD-OK"), "child failed:\n{out}");
}
