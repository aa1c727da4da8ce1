//! PKCS#11 v2.40 rules checked at the raw C ABI, where `cryptoki` would hide the detail:
//! the two-call convention, the five cases of `C_GetAttributeValue`, operation state
//! after errors, `CKR_OPERATION_ACTIVE`, initialisation rules, the interface and
//! function lists, mechanism information, session states and token flags.
//!
//! Tests that finalize the library or need other login states re-run themselves in a
//! child process (`CKS_TEST_CHILD`) with their own key store.
// The shared `call!` macro (tests/kat_util) expands raw-pointer arguments in `unsafe`.
#![allow(clippy::macro_metavars_in_unsafe)]

mod common;
#[macro_use]
mod kat_util;

use kat_util::{hex, name, raw, Mech, Raw, Tpl, P256_OID};
use pkcs11_sys::*;
use std::ffi::c_void;
use std::ptr::null_mut;

const NULL_BUF: *mut u8 = null_mut();

#[track_caller]
fn rv_eq(got: CK_RV, want: CK_RV, what: &str) {
    assert_eq!(
        got,
        want,
        "{what}: expected {}, got {}",
        name(want),
        name(got)
    );
}

/// Run `test` in a child process with a fresh key store; `CKS_TEST_CHILD` tells the
/// test it is the child.
fn in_child(test: &str) {
    let dir = common::tempdir();
    let cfg = common::write_config(&dir, "");
    let (ok, out) = common::run_child(
        test,
        &[
            ("CKS_TEST_CHILD", "1"),
            ("CKS_CONFIG", cfg.to_str().unwrap()),
        ],
    );
    assert!(ok, "child process for {test} failed:\n{out}");
    assert!(out.contains("1 passed"), "child ran no test:\n{out}");
}

fn is_child() -> bool {
    std::env::var_os("CKS_TEST_CHILD").is_some()
}

fn aes_session_key(r: &Raw, s: CK_SESSION_HANDLE) -> CK_OBJECT_HANDLE {
    r.aes_key(s, &hex("000102030405060708090a0b0c0d0e0f"))
        .unwrap()
}

// ---- the two-call convention ----------------------------------------------------------------

#[test]
fn encrypt_two_call_convention() {
    let r = raw();
    let s = r.session();
    let key = aes_session_key(r, s);
    let iv = [7u8; 16];
    let m = Mech::with_bytes(CKM_AES_CBC_PAD, &iv);
    let data = [0x42u8; 20];
    r.encrypt_init(s, &m, key).unwrap();
    let mut len: CK_ULONG = 0;
    rv_eq(
        call!(
            r,
            C_Encrypt(s, data.as_ptr() as *mut u8, 20, NULL_BUF, &mut len)
        ),
        CKR_OK,
        "length query",
    );
    assert_eq!(len, 32, "20 bytes pad to 32");
    let mut buf = vec![0u8; 64];
    let mut small: CK_ULONG = 31;
    rv_eq(
        call!(
            r,
            C_Encrypt(
                s,
                data.as_ptr() as *mut u8,
                20,
                buf.as_mut_ptr(),
                &mut small
            )
        ),
        CKR_BUFFER_TOO_SMALL,
        "buffer one byte short",
    );
    assert_eq!(
        small, 32,
        "the needed length comes back with CKR_BUFFER_TOO_SMALL"
    );
    // Still active: a second length query and then the real call.
    let mut len2: CK_ULONG = 0;
    rv_eq(
        call!(
            r,
            C_Encrypt(s, data.as_ptr() as *mut u8, 20, NULL_BUF, &mut len2)
        ),
        CKR_OK,
        "second query",
    );
    assert_eq!(len2, 32);
    let mut big: CK_ULONG = 64;
    rv_eq(
        call!(
            r,
            C_Encrypt(s, data.as_ptr() as *mut u8, 20, buf.as_mut_ptr(), &mut big)
        ),
        CKR_OK,
        "exact call",
    );
    assert_eq!(big, 32);
    let expected = r.encrypt(s, &m, key, &data).unwrap();
    assert_eq!(&buf[..32], &expected[..]);
    // Finished: another C_Encrypt has no operation.
    let mut l: CK_ULONG = 64;
    rv_eq(
        call!(
            r,
            C_Encrypt(s, data.as_ptr() as *mut u8, 20, buf.as_mut_ptr(), &mut l)
        ),
        CKR_OPERATION_NOT_INITIALIZED,
        "after completion",
    );
    // Multi-part: C_EncryptUpdate/C_EncryptFinal follow the same convention.
    r.encrypt_init(s, &m, key).unwrap();
    let mut l: CK_ULONG = 0;
    rv_eq(
        call!(
            r,
            C_EncryptUpdate(s, data.as_ptr() as *mut u8, 20, NULL_BUF, &mut l)
        ),
        CKR_OK,
        "update query",
    );
    assert!(
        l >= 16,
        "update of 20 bytes yields at least one block, announced {l}"
    );
    let mut out = vec![0u8; l as usize];
    rv_eq(
        call!(
            r,
            C_EncryptUpdate(s, data.as_ptr() as *mut u8, 20, out.as_mut_ptr(), &mut l)
        ),
        CKR_OK,
        "update",
    );
    out.truncate(l as usize);
    let mut fl: CK_ULONG = 0;
    rv_eq(
        call!(r, C_EncryptFinal(s, NULL_BUF, &mut fl)),
        CKR_OK,
        "final query",
    );
    let mut fin = vec![0u8; fl as usize];
    if fl > 0 {
        let mut short: CK_ULONG = fl - 1;
        rv_eq(
            call!(r, C_EncryptFinal(s, fin.as_mut_ptr(), &mut short)),
            CKR_BUFFER_TOO_SMALL,
            "final short",
        );
        assert_eq!(short, fl);
    }
    rv_eq(
        call!(r, C_EncryptFinal(s, fin.as_mut_ptr(), &mut fl)),
        CKR_OK,
        "final",
    );
    fin.truncate(fl as usize);
    out.extend(fin);
    assert_eq!(out, expected);
    r.close_session(s).unwrap();
}

#[test]
fn decrypt_cbc_pad_length_query_then_exact() {
    let r = raw();
    let s = r.session();
    let key = aes_session_key(r, s);
    let m = Mech::with_bytes(CKM_AES_CBC_PAD, &[9u8; 16]);
    let pt = b"twenty-three bytes long".to_vec();
    let ct = r.encrypt(s, &m, key, &pt).unwrap();
    assert_eq!(ct.len(), 32);
    r.decrypt_init(s, &m, key).unwrap();
    let mut len: CK_ULONG = 0;
    rv_eq(
        call!(
            r,
            C_Decrypt(s, ct.as_ptr() as *mut u8, 32, NULL_BUF, &mut len)
        ),
        CKR_OK,
        "length query",
    );
    assert!(len as usize >= pt.len() && len <= 32, "announced {len}");
    let mut buf = vec![0u8; 64];
    let mut short: CK_ULONG = (pt.len() - 1) as CK_ULONG;
    rv_eq(
        call!(
            r,
            C_Decrypt(s, ct.as_ptr() as *mut u8, 32, buf.as_mut_ptr(), &mut short)
        ),
        CKR_BUFFER_TOO_SMALL,
        "short buffer",
    );
    assert!(short as usize >= pt.len());
    let mut exact: CK_ULONG = len;
    rv_eq(
        call!(
            r,
            C_Decrypt(s, ct.as_ptr() as *mut u8, 32, buf.as_mut_ptr(), &mut exact)
        ),
        CKR_OK,
        "decrypt",
    );
    assert_eq!(&buf[..exact as usize], &pt[..]);
    r.close_session(s).unwrap();
}

#[test]
fn sign_and_digest_two_call_convention() {
    let r = raw();
    let s = r.session();
    let (_, private) = r
        .generate_key_pair(
            s,
            &Mech::new(CKM_EC_KEY_PAIR_GEN),
            Tpl::new()
                .bool(CKA_TOKEN, false)
                .bytes(CKA_EC_PARAMS, P256_OID),
            Tpl::new().bool(CKA_TOKEN, false),
        )
        .unwrap();
    let data = b"data".to_vec();
    r.sign_init(s, &Mech::new(CKM_ECDSA_SHA256), private)
        .unwrap();
    let mut len: CK_ULONG = 0;
    rv_eq(
        call!(
            r,
            C_Sign(s, data.as_ptr() as *mut u8, 4, NULL_BUF, &mut len)
        ),
        CKR_OK,
        "sign query",
    );
    assert_eq!(len, 64);
    let mut buf = vec![0u8; 64];
    let mut short: CK_ULONG = 63;
    rv_eq(
        call!(
            r,
            C_Sign(s, data.as_ptr() as *mut u8, 4, buf.as_mut_ptr(), &mut short)
        ),
        CKR_BUFFER_TOO_SMALL,
        "sign short",
    );
    assert_eq!(short, 64);
    let mut l: CK_ULONG = 64;
    rv_eq(
        call!(
            r,
            C_Sign(s, data.as_ptr() as *mut u8, 4, buf.as_mut_ptr(), &mut l)
        ),
        CKR_OK,
        "sign",
    );
    assert_eq!(l, 64);
    rv_eq(
        call!(
            r,
            C_Sign(s, data.as_ptr() as *mut u8, 4, buf.as_mut_ptr(), &mut l)
        ),
        CKR_OPERATION_NOT_INITIALIZED,
        "sign after completion",
    );
    // C_SignFinal too.
    r.sign_init(s, &Mech::new(CKM_ECDSA_SHA256), private)
        .unwrap();
    rv_eq(
        call!(r, C_SignUpdate(s, data.as_ptr() as *mut u8, 4)),
        CKR_OK,
        "update",
    );
    let mut l: CK_ULONG = 0;
    rv_eq(
        call!(r, C_SignFinal(s, NULL_BUF, &mut l)),
        CKR_OK,
        "final query",
    );
    assert_eq!(l, 64);
    let mut short: CK_ULONG = 10;
    rv_eq(
        call!(r, C_SignFinal(s, buf.as_mut_ptr(), &mut short)),
        CKR_BUFFER_TOO_SMALL,
        "final short",
    );
    rv_eq(
        call!(r, C_SignFinal(s, buf.as_mut_ptr(), &mut l)),
        CKR_OK,
        "final",
    );

    let want = hex("ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
    r.digest_init(s, &Mech::new(CKM_SHA256)).unwrap();
    let mut l: CK_ULONG = 0;
    rv_eq(
        call!(
            r,
            C_Digest(s, b"abc".as_ptr() as *mut u8, 3, NULL_BUF, &mut l)
        ),
        CKR_OK,
        "digest query",
    );
    assert_eq!(l, 32);
    let mut out = vec![0u8; 32];
    let mut short: CK_ULONG = 31;
    rv_eq(
        call!(
            r,
            C_Digest(
                s,
                b"abc".as_ptr() as *mut u8,
                3,
                out.as_mut_ptr(),
                &mut short
            )
        ),
        CKR_BUFFER_TOO_SMALL,
        "digest short",
    );
    assert_eq!(short, 32);
    rv_eq(
        call!(
            r,
            C_Digest(s, b"abc".as_ptr() as *mut u8, 3, out.as_mut_ptr(), &mut l)
        ),
        CKR_OK,
        "digest",
    );
    assert_eq!(out, want);
    r.close_session(s).unwrap();
}

#[test]
fn wrap_key_two_call_convention() {
    let r = raw();
    let s = r.session();
    let kek = aes_session_key(r, s);
    let target = r.generic_key(s, &[5u8; 24]).unwrap();
    let mut m = Mech::new(CKM_AES_KEY_WRAP).ck();
    let mut len: CK_ULONG = 0;
    rv_eq(
        call!(r, C_WrapKey(s, &mut m, kek, target, NULL_BUF, &mut len)),
        CKR_OK,
        "query",
    );
    assert_eq!(len, 32);
    let mut buf = vec![0u8; 32];
    let mut short: CK_ULONG = 31;
    rv_eq(
        call!(
            r,
            C_WrapKey(s, &mut m, kek, target, buf.as_mut_ptr(), &mut short)
        ),
        CKR_BUFFER_TOO_SMALL,
        "short",
    );
    assert_eq!(short, 32);
    rv_eq(
        call!(
            r,
            C_WrapKey(s, &mut m, kek, target, buf.as_mut_ptr(), &mut len)
        ),
        CKR_OK,
        "wrap",
    );
    assert_eq!(
        buf,
        r.wrap(s, &Mech::new(CKM_AES_KEY_WRAP), kek, target)
            .unwrap(),
        "deterministic"
    );
    r.close_session(s).unwrap();
}

#[test]
fn mechanism_and_slot_lists_two_call_convention() {
    let r = raw();
    let mut n: CK_ULONG = 0;
    rv_eq(
        call!(r, C_GetMechanismList(0, null_mut(), &mut n)),
        CKR_OK,
        "count",
    );
    assert!(n >= 40, "{n} mechanisms");
    let mut list = vec![0 as CK_MECHANISM_TYPE; n as usize + 3];
    let mut short: CK_ULONG = n - 1;
    rv_eq(
        call!(r, C_GetMechanismList(0, list.as_mut_ptr(), &mut short)),
        CKR_BUFFER_TOO_SMALL,
        "short",
    );
    assert_eq!(short, n);
    let mut cap: CK_ULONG = n + 3;
    rv_eq(
        call!(r, C_GetMechanismList(0, list.as_mut_ptr(), &mut cap)),
        CKR_OK,
        "list",
    );
    assert_eq!(cap, n);
    list.truncate(n as usize);
    for m in [
        CKM_AES_GCM,
        CKM_AES_KEY_WRAP_PAD,
        CKM_ECDSA_SHA256,
        CKM_ECDH1_DERIVE,
        CKM_RSA_PKCS_OAEP,
        CKM_SHA512_HMAC,
    ] {
        assert!(list.contains(&m), "mechanism 0x{m:x} missing");
    }
    rv_eq(
        call!(r, C_GetMechanismList(1, null_mut(), &mut n)),
        CKR_SLOT_ID_INVALID,
        "slot 1",
    );

    for present in [CK_TRUE, CK_FALSE] {
        let mut c: CK_ULONG = 0;
        rv_eq(
            call!(r, C_GetSlotList(present, null_mut(), &mut c)),
            CKR_OK,
            "slot count",
        );
        assert_eq!(c, 1, "one slot");
        let mut slots = [99 as CK_SLOT_ID; 2];
        let mut zero: CK_ULONG = 0;
        rv_eq(
            call!(r, C_GetSlotList(present, slots.as_mut_ptr(), &mut zero)),
            CKR_BUFFER_TOO_SMALL,
            "no room",
        );
        assert_eq!(zero, 1);
        let mut c: CK_ULONG = 2;
        rv_eq(
            call!(r, C_GetSlotList(present, slots.as_mut_ptr(), &mut c)),
            CKR_OK,
            "slots",
        );
        assert_eq!((c, slots[0]), (1, 0), "slot id 0");
    }
}

// ---- C_GetAttributeValue ------------------------------------------------------------------

#[test]
fn get_attribute_value_five_cases() {
    let r = raw();
    let s = r.session();
    // A sensitive session key (the default) with a label.
    let key = r
        .create(
            s,
            Tpl::new()
                .class(CKO_SECRET_KEY)
                .key_type(CKK_AES)
                .bool(CKA_TOKEN, false)
                .label("five-cases")
                .bytes(CKA_VALUE, &[1u8; 16]),
        )
        .unwrap();
    let get = |attrs: &mut [CK_ATTRIBUTE]| {
        call!(
            r,
            C_GetAttributeValue(s, key, attrs.as_mut_ptr(), attrs.len() as CK_ULONG)
        )
    };
    let attr = |t, p: *mut c_void, l| CK_ATTRIBUTE {
        type_: t,
        pValue: p,
        ulValueLen: l,
    };

    // 1. sensitive
    let mut v = [0u8; 32];
    let mut a = [attr(CKA_VALUE, v.as_mut_ptr() as *mut c_void, 32)];
    rv_eq(get(&mut a), CKR_ATTRIBUTE_SENSITIVE, "case 1");
    assert_eq!(a[0].ulValueLen, CK_UNAVAILABLE_INFORMATION);
    // 2. invalid for the object
    let mut a = [attr(CKA_MODULUS, v.as_mut_ptr() as *mut c_void, 32)];
    rv_eq(get(&mut a), CKR_ATTRIBUTE_TYPE_INVALID, "case 2");
    assert_eq!(a[0].ulValueLen, CK_UNAVAILABLE_INFORMATION);
    let mut a = [attr(0x7fff_0000, v.as_mut_ptr() as *mut c_void, 32)];
    rv_eq(
        get(&mut a),
        CKR_ATTRIBUTE_TYPE_INVALID,
        "case 2 (unknown type)",
    );
    assert_eq!(a[0].ulValueLen, CK_UNAVAILABLE_INFORMATION);
    // 3. NULL pValue: the length
    let mut a = [attr(CKA_LABEL, null_mut(), 0)];
    rv_eq(get(&mut a), CKR_OK, "case 3");
    assert_eq!(a[0].ulValueLen, 10);
    // 4. big enough
    let mut a = [attr(CKA_LABEL, v.as_mut_ptr() as *mut c_void, 32)];
    rv_eq(get(&mut a), CKR_OK, "case 4");
    assert_eq!(a[0].ulValueLen, 10);
    assert_eq!(&v[..10], b"five-cases");
    // 5. too small
    let mut a = [attr(CKA_LABEL, v.as_mut_ptr() as *mut c_void, 9)];
    rv_eq(get(&mut a), CKR_BUFFER_TOO_SMALL, "case 5");
    assert_eq!(a[0].ulValueLen, CK_UNAVAILABLE_INFORMATION);

    // Mixed: every attribute is processed; the good ones are filled.
    let mut label = [0u8; 16];
    let mut class = [0u8; 8];
    let mut a = [
        attr(CKA_VALUE, v.as_mut_ptr() as *mut c_void, 32),
        attr(CKA_LABEL, label.as_mut_ptr() as *mut c_void, 16),
        attr(CKA_CLASS, class.as_mut_ptr() as *mut c_void, 8),
    ];
    rv_eq(
        get(&mut a),
        CKR_ATTRIBUTE_SENSITIVE,
        "mixed sensitive + normal",
    );
    assert_eq!(a[0].ulValueLen, CK_UNAVAILABLE_INFORMATION);
    assert_eq!(a[1].ulValueLen, 10);
    assert_eq!(&label[..10], b"five-cases");
    assert_eq!(a[2].ulValueLen, 8);
    assert_eq!(CK_ULONG::from_ne_bytes(class), CKO_SECRET_KEY);
    let mut a = [
        attr(CKA_LABEL, null_mut(), 0),
        attr(0x7fff_0001, null_mut(), 0),
    ];
    rv_eq(
        get(&mut a),
        CKR_ATTRIBUTE_TYPE_INVALID,
        "mixed invalid + normal",
    );
    assert_eq!(a[0].ulValueLen, 10);
    assert_eq!(a[1].ulValueLen, CK_UNAVAILABLE_INFORMATION);
    r.close_session(s).unwrap();
}

// ---- operation state ------------------------------------------------------------------------

#[test]
fn errors_end_the_operation_short_buffers_do_not() {
    let r = raw();
    let s = r.session();
    let key = aes_session_key(r, s);
    let cbc = Mech::with_bytes(CKM_AES_CBC, &[0u8; 16]);
    let mut buf = [0u8; 64];
    let mut l: CK_ULONG = 64;

    // C_Encrypt with a partial block: CKR_DATA_LEN_RANGE, and the operation is over.
    r.encrypt_init(s, &cbc, key).unwrap();
    rv_eq(
        call!(
            r,
            C_Encrypt(s, buf.as_mut_ptr(), 17, buf.as_mut_ptr(), &mut l)
        ),
        CKR_DATA_LEN_RANGE,
        "partial block",
    );
    let mut l: CK_ULONG = 64;
    rv_eq(
        call!(
            r,
            C_Encrypt(s, buf.as_mut_ptr(), 16, buf.as_mut_ptr(), &mut l)
        ),
        CKR_OPERATION_NOT_INITIALIZED,
        "after error",
    );
    // A new C_EncryptInit is allowed afterwards (nothing is active).
    r.encrypt_init(s, &cbc, key).unwrap();
    let mut l: CK_ULONG = 64;
    let mut out = [0u8; 64];
    rv_eq(
        call!(
            r,
            C_Encrypt(s, buf.as_mut_ptr(), 16, out.as_mut_ptr(), &mut l)
        ),
        CKR_OK,
        "fresh operation",
    );

    // C_Decrypt with bad padding ends the operation too.
    let pad = Mech::with_bytes(CKM_AES_CBC_PAD, &[0u8; 16]);
    let ct = r.encrypt(s, &cbc, key, &[0u8; 32]).unwrap();
    r.decrypt_init(s, &pad, key).unwrap();
    let mut l: CK_ULONG = 64;
    rv_eq(
        call!(
            r,
            C_Decrypt(s, ct.as_ptr() as *mut u8, 32, out.as_mut_ptr(), &mut l)
        ),
        CKR_ENCRYPTED_DATA_INVALID,
        "bad padding",
    );
    let mut l: CK_ULONG = 64;
    rv_eq(
        call!(
            r,
            C_Decrypt(s, ct.as_ptr() as *mut u8, 32, out.as_mut_ptr(), &mut l)
        ),
        CKR_OPERATION_NOT_INITIALIZED,
        "after error",
    );

    // A failed C_Verify ends the verification.
    let mac = r.generic_key(s, &[3u8; 32]).unwrap();
    let hm = Mech::new(CKM_SHA256_HMAC);
    r.verify_init(s, &hm, mac).unwrap();
    let bad = [0u8; 32];
    rv_eq(
        call!(
            r,
            C_Verify(s, buf.as_mut_ptr(), 3, bad.as_ptr() as *mut u8, 32)
        ),
        CKR_SIGNATURE_INVALID,
        "bad MAC",
    );
    rv_eq(
        call!(
            r,
            C_Verify(s, buf.as_mut_ptr(), 3, bad.as_ptr() as *mut u8, 32)
        ),
        CKR_OPERATION_NOT_INITIALIZED,
        "after error",
    );

    // A short buffer keeps the operation (a NULL-buffer query too: shown above).
    r.sign_init(s, &hm, mac).unwrap();
    let mut short: CK_ULONG = 1;
    rv_eq(
        call!(
            r,
            C_Sign(s, buf.as_mut_ptr(), 3, out.as_mut_ptr(), &mut short)
        ),
        CKR_BUFFER_TOO_SMALL,
        "short",
    );
    let mut l: CK_ULONG = 64;
    rv_eq(
        call!(r, C_Sign(s, buf.as_mut_ptr(), 3, out.as_mut_ptr(), &mut l)),
        CKR_OK,
        "completed after a short buffer",
    );
    assert_eq!(&out[..32], &r.sign(s, &hm, mac, &buf[..3]).unwrap()[..]);
    r.close_session(s).unwrap();
}

/// PKCS#11 v2.40 §5.8 (C_Encrypt): "A call to C_Encrypt always terminates the active
/// encryption operation unless it returns CKR_BUFFER_TOO_SMALL or is a successful call
/// (i.e., one which returns CKR_OK) to determine the length of the buffer needed to hold
/// the ciphertext." The same sentence is in C_Sign (§5.11) and the others. So an
/// argument error (NULL length pointer, NULL data with a length) ends the operation too.
#[test]
fn argument_errors_end_the_operation_too() {
    let r = raw();
    let s = r.session();
    let key = aes_session_key(r, s);
    let ecb = Mech::new(CKM_AES_ECB);
    let data = [0u8; 16];
    let mut out = [0u8; 16];

    r.encrypt_init(s, &ecb, key).unwrap();
    rv_eq(
        call!(
            r,
            C_Encrypt(
                s,
                data.as_ptr() as *mut u8,
                16,
                out.as_mut_ptr(),
                null_mut()
            )
        ),
        CKR_ARGUMENTS_BAD,
        "C_Encrypt with a NULL length pointer",
    );
    let mut l: CK_ULONG = 16;
    rv_eq(
        call!(
            r,
            C_Encrypt(s, data.as_ptr() as *mut u8, 16, out.as_mut_ptr(), &mut l)
        ),
        CKR_OPERATION_NOT_INITIALIZED,
        "C_Encrypt after a failed C_Encrypt (CKR_ARGUMENTS_BAD)",
    );
    let _ = call!(r, C_EncryptInit(s, null_mut(), 0)); // cancel, whatever happened above

    let mac = r.generic_key(s, &[1u8; 16]).unwrap();
    r.sign_init(s, &Mech::new(CKM_SHA256_HMAC), mac).unwrap();
    rv_eq(
        call!(r, C_Sign(s, null_mut(), 5, out.as_mut_ptr(), null_mut())),
        CKR_ARGUMENTS_BAD,
        "C_Sign with NULL data of length 5",
    );
    let mut l: CK_ULONG = 32;
    let mut sig = [0u8; 32];
    rv_eq(
        call!(
            r,
            C_Sign(s, data.as_ptr() as *mut u8, 16, sig.as_mut_ptr(), &mut l)
        ),
        CKR_OPERATION_NOT_INITIALIZED,
        "C_Sign after a failed C_Sign (CKR_ARGUMENTS_BAD)",
    );
    r.close_session(s).unwrap();
}

#[test]
fn operation_active_and_not_initialized() {
    let r = raw();
    let s = r.session();
    let key = aes_session_key(r, s);
    let ecb = Mech::new(CKM_AES_ECB);
    let mut out = [0u8; 32];
    let mut l: CK_ULONG = 32;
    let data = [0u8; 16];

    rv_eq(
        call!(
            r,
            C_Encrypt(s, data.as_ptr() as *mut u8, 16, out.as_mut_ptr(), &mut l)
        ),
        CKR_OPERATION_NOT_INITIALIZED,
        "C_Encrypt without init",
    );
    rv_eq(
        call!(
            r,
            C_Decrypt(s, data.as_ptr() as *mut u8, 16, out.as_mut_ptr(), &mut l)
        ),
        CKR_OPERATION_NOT_INITIALIZED,
        "C_Decrypt without init",
    );
    rv_eq(
        call!(
            r,
            C_Sign(s, data.as_ptr() as *mut u8, 16, out.as_mut_ptr(), &mut l)
        ),
        CKR_OPERATION_NOT_INITIALIZED,
        "C_Sign without init",
    );
    rv_eq(
        call!(r, C_SignUpdate(s, data.as_ptr() as *mut u8, 16)),
        CKR_OPERATION_NOT_INITIALIZED,
        "C_SignUpdate without init",
    );
    rv_eq(
        call!(
            r,
            C_Verify(s, data.as_ptr() as *mut u8, 16, out.as_mut_ptr(), 32)
        ),
        CKR_OPERATION_NOT_INITIALIZED,
        "C_Verify without init",
    );
    rv_eq(
        call!(r, C_DigestUpdate(s, data.as_ptr() as *mut u8, 16)),
        CKR_OPERATION_NOT_INITIALIZED,
        "C_DigestUpdate without init",
    );
    rv_eq(
        call!(r, C_DigestFinal(s, out.as_mut_ptr(), &mut l)),
        CKR_OPERATION_NOT_INITIALIZED,
        "C_DigestFinal without init",
    );
    rv_eq(
        call!(r, C_EncryptFinal(s, out.as_mut_ptr(), &mut l)),
        CKR_OPERATION_NOT_INITIALIZED,
        "C_EncryptFinal without init",
    );
    let mut found: CK_ULONG = 0;
    let mut handles = [0 as CK_OBJECT_HANDLE; 4];
    rv_eq(
        call!(r, C_FindObjects(s, handles.as_mut_ptr(), 4, &mut found)),
        CKR_OPERATION_NOT_INITIALIZED,
        "C_FindObjects without init",
    );
    rv_eq(
        call!(r, C_FindObjectsFinal(s)),
        CKR_OPERATION_NOT_INITIALIZED,
        "C_FindObjectsFinal without init",
    );

    // A second Init of the same kind while one is active.
    r.encrypt_init(s, &ecb, key).unwrap();
    let mut m = ecb.ck();
    rv_eq(
        call!(r, C_EncryptInit(s, &mut m, key)),
        CKR_OPERATION_ACTIVE,
        "second C_EncryptInit",
    );
    // The first operation is untouched by the refused Init.
    let mut l: CK_ULONG = 32;
    rv_eq(
        call!(
            r,
            C_Encrypt(s, data.as_ptr() as *mut u8, 16, out.as_mut_ptr(), &mut l)
        ),
        CKR_OK,
        "first operation still works",
    );
    assert_eq!(l, 16);

    let mac = r.generic_key(s, &[1u8; 16]).unwrap();
    let mut hm = Mech::new(CKM_SHA256_HMAC).ck();
    rv_eq(call!(r, C_SignInit(s, &mut hm, mac)), CKR_OK, "sign init");
    rv_eq(
        call!(r, C_SignInit(s, &mut hm, mac)),
        CKR_OPERATION_ACTIVE,
        "second C_SignInit",
    );
    rv_eq(
        call!(r, C_SignUpdate(s, data.as_ptr() as *mut u8, 16)),
        CKR_OK,
        "first sign continues",
    );
    // Single-part after multi-part began is refused.
    let mut l: CK_ULONG = 32;
    let rv = call!(
        r,
        C_Sign(s, data.as_ptr() as *mut u8, 16, out.as_mut_ptr(), &mut l)
    );
    assert_ne!(rv, CKR_OK, "C_Sign after C_SignUpdate");
    let mut d = Mech::new(CKM_SHA256).ck();
    rv_eq(call!(r, C_DigestInit(s, &mut d)), CKR_OK, "digest init");
    rv_eq(
        call!(r, C_DigestInit(s, &mut d)),
        CKR_OPERATION_ACTIVE,
        "second C_DigestInit",
    );
    let mut l: CK_ULONG = 32;
    rv_eq(
        call!(
            r,
            C_Digest(s, data.as_ptr() as *mut u8, 16, out.as_mut_ptr(), &mut l)
        ),
        CKR_OK,
        "digest",
    );

    let mut t = Tpl::new().class(CKO_SECRET_KEY);
    let mut a = t.ck();
    rv_eq(
        call!(r, C_FindObjectsInit(s, a.as_mut_ptr(), 1)),
        CKR_OK,
        "find init",
    );
    rv_eq(
        call!(r, C_FindObjectsInit(s, a.as_mut_ptr(), 1)),
        CKR_OPERATION_ACTIVE,
        "second C_FindObjectsInit",
    );
    rv_eq(call!(r, C_FindObjectsFinal(s)), CKR_OK, "find final");
    r.close_session(s).unwrap();
}

#[test]
fn sign_recover_and_verify_recover_are_not_supported() {
    let r = raw();
    let s = r.session();
    let (public, private) = r
        .generate_key_pair(
            s,
            &Mech::new(CKM_RSA_PKCS_KEY_PAIR_GEN),
            Tpl::new()
                .bool(CKA_TOKEN, false)
                .ulong(CKA_MODULUS_BITS, 2048),
            Tpl::new().bool(CKA_TOKEN, false),
        )
        .unwrap();
    let mut m = Mech::new(CKM_RSA_PKCS).ck();
    rv_eq(
        call!(r, C_SignRecoverInit(s, &mut m, private)),
        CKR_FUNCTION_NOT_SUPPORTED,
        "C_SignRecoverInit",
    );
    rv_eq(
        call!(r, C_VerifyRecoverInit(s, &mut m, public)),
        CKR_FUNCTION_NOT_SUPPORTED,
        "C_VerifyRecoverInit",
    );
    r.close_session(s).unwrap();
}

// ---- lists and information ----------------------------------------------------------------

#[test]
fn every_function_pointer_is_set() {
    let r = raw();
    let f = r.f;
    let off = std::mem::offset_of!(CK_FUNCTION_LIST, C_Initialize);
    let n = (std::mem::size_of::<CK_FUNCTION_LIST>() - off) / std::mem::size_of::<usize>();
    assert_eq!(n, 68, "PKCS#11 v2.40 has 68 functions");
    // SAFETY: the list is a C struct of a version followed by n function pointers.
    let ptrs = unsafe {
        std::slice::from_raw_parts(
            (f as *const CK_FUNCTION_LIST as *const u8).add(off) as *const usize,
            n,
        )
    };
    for (i, p) in ptrs.iter().enumerate() {
        assert_ne!(*p, 0, "function pointer #{i} of CK_FUNCTION_LIST is NULL");
    }
    assert_eq!((f.version.major, f.version.minor), (2, 40));
    // C_GetFunctionList through the list returns the same list.
    let mut again: CK_FUNCTION_LIST_PTR = null_mut();
    rv_eq(
        call!(r, C_GetFunctionList(&mut again)),
        CKR_OK,
        "C_GetFunctionList",
    );
    assert_eq!(again as *const _, f as *const _);
    rv_eq(
        call!(r, C_GetFunctionList(null_mut())),
        CKR_ARGUMENTS_BAD,
        "NULL pointer",
    );
}

#[test]
fn interface_list_offers_pkcs11_2_40() {
    let r = raw();
    let list_sym = r.symbol("C_GetInterfaceList");
    let get_sym = r.symbol("C_GetInterface");
    assert!(
        !list_sym.is_null() && !get_sym.is_null(),
        "C_GetInterfaceList/C_GetInterface exported"
    );
    type ListFn = unsafe extern "C" fn(*mut CK_INTERFACE, *mut CK_ULONG) -> CK_RV;
    type GetFn = unsafe extern "C" fn(
        *mut CK_UTF8CHAR,
        *mut CK_VERSION,
        *mut *mut CK_INTERFACE,
        CK_FLAGS,
    ) -> CK_RV;
    // SAFETY: the exported symbols have these signatures (PKCS#11 3.0).
    let (list, get): (ListFn, GetFn) = unsafe {
        (
            std::mem::transmute::<*mut c_void, ListFn>(list_sym),
            std::mem::transmute::<*mut c_void, GetFn>(get_sym),
        )
    };
    let mut n: CK_ULONG = 0;
    // SAFETY: valid pointers.
    unsafe {
        rv_eq(list(null_mut(), &mut n), CKR_OK, "count");
        assert_eq!(n, 1);
        let mut zero: CK_ULONG = 0;
        let mut ifs: [CK_INTERFACE; 2] = std::mem::zeroed();
        rv_eq(
            list(ifs.as_mut_ptr(), &mut zero),
            CKR_BUFFER_TOO_SMALL,
            "no room",
        );
        assert_eq!(zero, 1);
        let mut cap: CK_ULONG = 2;
        rv_eq(list(ifs.as_mut_ptr(), &mut cap), CKR_OK, "list");
        assert_eq!(cap, 1);
        let name_ = std::ffi::CStr::from_ptr(ifs[0].pInterfaceName as *const std::ffi::c_char);
        assert_eq!(name_.to_bytes(), b"PKCS 11");
        let fl = &*(ifs[0].pFunctionList as *const CK_FUNCTION_LIST);
        assert_eq!(
            (fl.version.major, fl.version.minor),
            (2, 40),
            "the interface is v2.40"
        );
        assert_eq!(
            ifs[0].pFunctionList as *const CK_FUNCTION_LIST,
            r.f as *const _
        );

        let mut p: *mut CK_INTERFACE = null_mut();
        rv_eq(
            get(null_mut(), null_mut(), &mut p, 0),
            CKR_OK,
            "default interface",
        );
        assert!(!p.is_null());
        assert_eq!(
            (*p).pFunctionList as *const CK_FUNCTION_LIST,
            r.f as *const _
        );
        let mut v = CK_VERSION {
            major: 2,
            minor: 40,
        };
        let mut nm = *b"PKCS 11\0";
        rv_eq(
            get(nm.as_mut_ptr(), &mut v, &mut p, 0),
            CKR_OK,
            "named, versioned",
        );
        let mut v3 = CK_VERSION { major: 3, minor: 0 };
        assert_ne!(
            get(nm.as_mut_ptr(), &mut v3, &mut p, 0),
            CKR_OK,
            "no 3.0 interface is offered"
        );
        let mut other = *b"Vendor X\0";
        assert_ne!(
            get(other.as_mut_ptr(), null_mut(), &mut p, 0),
            CKR_OK,
            "no other interface"
        );
    }
}

#[test]
fn mechanism_info_for_every_listed_mechanism() {
    let r = raw();
    let mut n: CK_ULONG = 0;
    rv_eq(
        call!(r, C_GetMechanismList(0, null_mut(), &mut n)),
        CKR_OK,
        "count",
    );
    let mut list = vec![0; n as usize];
    rv_eq(
        call!(r, C_GetMechanismList(0, list.as_mut_ptr(), &mut n)),
        CKR_OK,
        "list",
    );
    let function_flags = CKF_ENCRYPT
        | CKF_DECRYPT
        | CKF_DIGEST
        | CKF_SIGN
        | CKF_VERIFY
        | CKF_GENERATE
        | CKF_GENERATE_KEY_PAIR
        | CKF_WRAP
        | CKF_UNWRAP
        | CKF_DERIVE;
    for m in &list {
        // SAFETY: plain data.
        let mut info: CK_MECHANISM_INFO = unsafe { std::mem::zeroed() };
        rv_eq(
            call!(r, C_GetMechanismInfo(0, *m, &mut info)),
            CKR_OK,
            &format!("mechanism 0x{m:x}"),
        );
        assert_ne!(
            info.flags & function_flags,
            0,
            "mechanism 0x{m:x} serves no function"
        );
        assert!(
            info.ulMinKeySize <= info.ulMaxKeySize,
            "mechanism 0x{m:x}: min > max"
        );
        assert_eq!(
            info.flags & CKF_HW,
            0,
            "software instance does not claim CKF_HW"
        );
    }
    let expect = |m: CK_MECHANISM_TYPE, flags: CK_FLAGS, min: CK_ULONG, max: CK_ULONG| {
        // SAFETY: plain data.
        let mut info: CK_MECHANISM_INFO = unsafe { std::mem::zeroed() };
        rv_eq(
            call!(r, C_GetMechanismInfo(0, m, &mut info)),
            CKR_OK,
            "info",
        );
        assert_eq!(
            info.flags & flags,
            flags,
            "mechanism 0x{m:x} flags 0x{:x}",
            info.flags
        );
        assert_eq!(
            (info.ulMinKeySize, info.ulMaxKeySize),
            (min, max),
            "mechanism 0x{m:x} key sizes"
        );
    };
    expect(CKM_AES_GCM, CKF_ENCRYPT | CKF_DECRYPT, 16, 32);
    expect(CKM_AES_KEY_WRAP, CKF_WRAP | CKF_UNWRAP, 16, 32);
    expect(
        CKM_ECDSA_SHA256,
        CKF_SIGN | CKF_VERIFY | CKF_EC_NAMEDCURVE | CKF_EC_UNCOMPRESS,
        256,
        384,
    );
    expect(CKM_ECDH1_DERIVE, CKF_DERIVE, 256, 384);
    expect(CKM_RSA_PKCS_KEY_PAIR_GEN, CKF_GENERATE_KEY_PAIR, 2048, 4096);
    expect(CKM_SHA256, CKF_DIGEST, 0, 0);
    // SAFETY: plain data.
    let mut info: CK_MECHANISM_INFO = unsafe { std::mem::zeroed() };
    rv_eq(
        call!(r, C_GetMechanismInfo(0, CKM_DES3_CBC, &mut info)),
        CKR_MECHANISM_INVALID,
        "unlisted mechanism",
    );
    rv_eq(
        call!(r, C_GetMechanismInfo(7, CKM_SHA256, &mut info)),
        CKR_SLOT_ID_INVALID,
        "bad slot",
    );
}

#[test]
fn token_and_library_information() {
    let r = raw();
    let t = r.token_info().unwrap();
    for (flag, what) in [
        (CKF_RNG, "CKF_RNG"),
        (CKF_LOGIN_REQUIRED, "CKF_LOGIN_REQUIRED"),
        (CKF_USER_PIN_INITIALIZED, "CKF_USER_PIN_INITIALIZED"),
        (CKF_TOKEN_INITIALIZED, "CKF_TOKEN_INITIALIZED"),
    ] {
        assert_ne!(
            t.flags & flag,
            0,
            "{what} missing from token flags 0x{:x}",
            t.flags
        );
    }
    for (flag, what) in [
        (CKF_USER_PIN_LOCKED, "CKF_USER_PIN_LOCKED"),
        (CKF_SO_PIN_LOCKED, "CKF_SO_PIN_LOCKED"),
        (CKF_WRITE_PROTECTED, "CKF_WRITE_PROTECTED"),
    ] {
        assert_eq!(t.flags & flag, 0, "{what} should not be set");
    }
    assert_eq!(&t.label[..common::LABEL.len()], common::LABEL.as_bytes());
    assert!(
        t.label[common::LABEL.len()..].iter().all(|b| *b == b' '),
        "label blank-padded"
    );
    assert_eq!((t.ulMinPinLen, t.ulMaxPinLen), (4, 64));
    // SAFETY: plain data.
    let mut info: CK_INFO = unsafe { std::mem::zeroed() };
    rv_eq(call!(r, C_GetInfo(&mut info)), CKR_OK, "C_GetInfo");
    assert_eq!(
        (info.cryptokiVersion.major, info.cryptokiVersion.minor),
        (2, 40)
    );
    assert_eq!(info.flags, 0);
    assert!(
        info.manufacturerID.iter().all(|b| *b != 0),
        "blank-padded, no NUL"
    );
    // SAFETY: plain data.
    let mut slot: CK_SLOT_INFO = unsafe { std::mem::zeroed() };
    rv_eq(
        call!(r, C_GetSlotInfo(0, &mut slot)),
        CKR_OK,
        "C_GetSlotInfo",
    );
    assert_ne!(slot.flags & CKF_TOKEN_PRESENT, 0);
    rv_eq(
        call!(r, C_GetSlotInfo(1, &mut slot)),
        CKR_SLOT_ID_INVALID,
        "slot 1",
    );
}

// ---- initialisation rules (child process: they finalize) ---------------------------------------

/// A non-NULL pointer that is never dereferenced.
fn not_null() -> *mut c_void {
    std::ptr::NonNull::<c_void>::dangling().as_ptr()
}

unsafe extern "C" fn create_mutex(p: *mut *mut c_void) -> CK_RV {
    *p = not_null();
    CKR_OK
}
unsafe extern "C" fn mutex_op(_p: *mut c_void) -> CK_RV {
    CKR_OK
}

#[test]
fn initialize_and_finalize_rules() {
    if !is_child() {
        return in_child("initialize_and_finalize_rules");
    }
    let r = Raw::load(&common::module_path());
    // SAFETY: plain data.
    let mut info: CK_INFO = unsafe { std::mem::zeroed() };
    rv_eq(
        call!(r, C_GetInfo(&mut info)),
        CKR_CRYPTOKI_NOT_INITIALIZED,
        "C_GetInfo before C_Initialize",
    );
    let mut n: CK_ULONG = 0;
    rv_eq(
        call!(r, C_GetSlotList(CK_FALSE, null_mut(), &mut n)),
        CKR_CRYPTOKI_NOT_INITIALIZED,
        "C_GetSlotList before",
    );
    assert_eq!(
        r.open_session(true),
        Err(CKR_CRYPTOKI_NOT_INITIALIZED),
        "C_OpenSession before"
    );
    rv_eq(
        call!(r, C_Finalize(null_mut())),
        CKR_CRYPTOKI_NOT_INITIALIZED,
        "C_Finalize before",
    );

    let mut args = CK_C_INITIALIZE_ARGS {
        CreateMutex: None,
        DestroyMutex: None,
        LockMutex: None,
        UnlockMutex: None,
        flags: 0,
        pReserved: not_null(),
    };
    rv_eq(
        call!(r, C_Initialize(&mut args as *mut _ as *mut c_void)),
        CKR_ARGUMENTS_BAD,
        "pReserved non-NULL",
    );
    args.pReserved = null_mut();
    args.CreateMutex = Some(create_mutex);
    args.DestroyMutex = Some(mutex_op);
    args.LockMutex = Some(mutex_op);
    args.UnlockMutex = Some(mutex_op);
    rv_eq(
        call!(r, C_Initialize(&mut args as *mut _ as *mut c_void)),
        CKR_CANT_LOCK,
        "mutex functions without CKF_OS_LOCKING_OK",
    );
    args.LockMutex = None;
    rv_eq(
        call!(r, C_Initialize(&mut args as *mut _ as *mut c_void)),
        CKR_ARGUMENTS_BAD,
        "some but not all mutex functions",
    );
    // Nothing above initialised the library.
    rv_eq(
        call!(r, C_GetInfo(&mut info)),
        CKR_CRYPTOKI_NOT_INITIALIZED,
        "still not initialised",
    );

    // Mutex functions *and* CKF_OS_LOCKING_OK: the library may use OS locking.
    args.LockMutex = Some(mutex_op);
    args.flags = CKF_OS_LOCKING_OK;
    rv_eq(
        call!(r, C_Initialize(&mut args as *mut _ as *mut c_void)),
        CKR_OK,
        "mutexes + OS locking",
    );
    rv_eq(
        call!(r, C_Initialize(null_mut())),
        CKR_CRYPTOKI_ALREADY_INITIALIZED,
        "second C_Initialize",
    );
    rv_eq(call!(r, C_GetInfo(&mut info)), CKR_OK, "C_GetInfo");
    rv_eq(
        call!(r, C_Finalize(not_null())),
        CKR_ARGUMENTS_BAD,
        "C_Finalize(non-NULL)",
    );
    rv_eq(call!(r, C_Finalize(null_mut())), CKR_OK, "C_Finalize");
    rv_eq(
        call!(r, C_GetInfo(&mut info)),
        CKR_CRYPTOKI_NOT_INITIALIZED,
        "C_GetInfo after C_Finalize",
    );
    assert_eq!(r.open_session(false), Err(CKR_CRYPTOKI_NOT_INITIALIZED));
    rv_eq(
        call!(r, C_Finalize(null_mut())),
        CKR_CRYPTOKI_NOT_INITIALIZED,
        "second C_Finalize",
    );
    // NULL args (no threads needed) work, and a session survives until C_Finalize.
    rv_eq(
        call!(r, C_Initialize(null_mut())),
        CKR_OK,
        "C_Initialize(NULL)",
    );
    let tok = r.token_info().unwrap();
    assert_eq!(
        tok.flags & CKF_TOKEN_INITIALIZED,
        0,
        "fresh store: token not initialised"
    );
    assert_eq!(tok.flags & CKF_USER_PIN_INITIALIZED, 0);
    assert_ne!(tok.flags & CKF_RNG, 0);
    r.finalize().unwrap();
    r.initialize().unwrap();
    r.finalize().unwrap();
}

#[test]
fn session_states() {
    if !is_child() {
        return in_child("session_states");
    }
    let r = Raw::load(&common::module_path());
    r.initialize().unwrap();
    let mut label = [b' '; 32];
    label[..common::LABEL.len()].copy_from_slice(common::LABEL.as_bytes());
    let so = common::SO_PIN;
    rv_eq(
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
        "C_InitToken",
    );
    let state = |h| r.session_info(h).unwrap().state;

    let ro = r.open_session(false).unwrap();
    let rw = r.open_session(true).unwrap();
    assert_eq!(state(ro), CKS_RO_PUBLIC_SESSION);
    assert_eq!(state(rw), CKS_RW_PUBLIC_SESSION);
    let info = r.session_info(rw).unwrap();
    assert_eq!(info.flags, CKF_SERIAL_SESSION | CKF_RW_SESSION);
    assert_eq!(info.slotID, 0);
    assert_eq!(r.session_info(ro).unwrap().flags, CKF_SERIAL_SESSION);

    // The SO cannot log in while a read-only session exists.
    assert_eq!(r.login(rw, CKU_SO, so), Err(CKR_SESSION_READ_ONLY_EXISTS));
    r.close_session(ro).unwrap();
    r.login(rw, CKU_SO, so).unwrap();
    assert_eq!(state(rw), CKS_RW_SO_FUNCTIONS);
    assert_eq!(
        r.open_session(false),
        Err(CKR_SESSION_READ_WRITE_SO_EXISTS),
        "RO session while SO is logged in"
    );
    assert_eq!(
        r.login(rw, CKU_USER, common::USER_PIN),
        Err(CKR_USER_ANOTHER_ALREADY_LOGGED_IN)
    );
    assert_eq!(r.login(rw, CKU_SO, so), Err(CKR_USER_ALREADY_LOGGED_IN));
    let pin = common::USER_PIN;
    rv_eq(
        call!(
            r,
            C_InitPIN(rw, pin.as_ptr() as *mut u8, pin.len() as CK_ULONG)
        ),
        CKR_OK,
        "C_InitPIN",
    );
    // The SO cannot make or use keys.
    let got = r.generate_key(
        rw,
        &Mech::new(CKM_AES_KEY_GEN),
        Tpl::new().bool(CKA_TOKEN, false).ulong(CKA_VALUE_LEN, 16),
    );
    assert_eq!(
        got.map_err(name),
        Err(name(CKR_USER_NOT_LOGGED_IN)),
        "SO generating a key"
    );
    r.logout(rw).unwrap();
    assert_eq!(state(rw), CKS_RW_PUBLIC_SESSION);
    assert_eq!(
        r.logout(rw),
        Err(CKR_USER_NOT_LOGGED_IN),
        "logout when nobody is logged in"
    );

    let ro = r.open_session(false).unwrap();
    r.login(ro, CKU_USER, pin).unwrap();
    assert_eq!(
        state(ro),
        CKS_RO_USER_FUNCTIONS,
        "login state is per application: every session"
    );
    assert_eq!(state(rw), CKS_RW_USER_FUNCTIONS);
    assert_eq!(
        r.login(rw, CKU_SO, so),
        Err(CKR_USER_ANOTHER_ALREADY_LOGGED_IN)
    );
    // A read-only session cannot make token objects.
    let got = r.create(
        ro,
        Tpl::new()
            .class(CKO_DATA)
            .bool(CKA_TOKEN, true)
            .bytes(CKA_VALUE, b"x"),
    );
    assert_eq!(
        got,
        Err(CKR_SESSION_READ_ONLY),
        "token object from a read-only session"
    );
    r.logout(ro).unwrap();
    assert_eq!(state(ro), CKS_RO_PUBLIC_SESSION);
    assert_eq!(state(rw), CKS_RW_PUBLIC_SESSION);

    // Closing the last session logs the application out.
    r.login(rw, CKU_USER, pin).unwrap();
    rv_eq(
        call!(r, C_CloseAllSessions(0)),
        CKR_OK,
        "C_CloseAllSessions",
    );
    assert_eq!(
        r.session_info(rw).map(|i| i.state),
        Err(CKR_SESSION_HANDLE_INVALID)
    );
    let s = r.open_session(false).unwrap();
    assert_eq!(
        state(s),
        CKS_RO_PUBLIC_SESSION,
        "closing every session logged out"
    );
    r.finalize().unwrap();
}
