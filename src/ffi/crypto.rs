//! Encryption, decryption, digests, signatures and MACs (PKCS#11 v2.40 §5.8–5.12).

use super::args::{bytes, out_capacity, write_out};
use super::mechanism;
use super::with_provider;
use crate::error::{Error, Result};
use crate::provider::Provider;
use crate::token::OpKind;
use pkcs11_sys::*;

/// "A call to C_Encrypt always terminates the active encryption operation unless it
/// returns CKR_BUFFER_TOO_SMALL or is a successful call to determine the length": a
/// bad argument ends the operation as any other error does.
fn ending<T>(p: &Provider, h: CK_SESSION_HANDLE, kind: OpKind, r: Result<T>) -> Result<T> {
    if r.is_err() {
        p.token.abort(h, kind);
    }
    r
}

/// `C_xxxInit` for operations that bind a key. A NULL mechanism cancels (PKCS#11 3.0).
unsafe fn init(
    name: &'static str,
    h: CK_SESSION_HANDLE,
    kind: OpKind,
    m: CK_MECHANISM_PTR,
    key: CK_OBJECT_HANDLE,
) -> CK_RV {
    with_provider(name, |p| {
        if m.is_null() {
            p.token.op_init(h, kind, None, key)?;
            return Ok(CKR_OK);
        }
        let (mech, t) = mechanism::parse(m)?;
        p.token.op_init(h, kind, Some((&mech, t)), key)?;
        Ok(CKR_OK)
    })
}

/// A single-part or update call that returns output by the two-call convention.
#[allow(clippy::too_many_arguments)] // mirrors the C signature
unsafe fn cipher_call(
    name: &'static str,
    h: CK_SESSION_HANDLE,
    kind: OpKind,
    update: bool,
    input: CK_BYTE_PTR,
    input_len: CK_ULONG,
    out: CK_BYTE_PTR,
    out_len: CK_ULONG_PTR,
) -> CK_RV {
    with_provider(name, |p| {
        let data = ending(p, h, kind, bytes(input, input_len))?;
        let cap = ending(p, h, kind, out_capacity(out, out_len))?;
        let r = if update {
            p.token.cipher_update(h, kind, data, cap)?
        } else {
            p.token.cipher(h, kind, data, cap)?
        };
        Ok(write_out(r, out, out_len))
    })
}

unsafe fn cipher_final(
    name: &'static str,
    h: CK_SESSION_HANDLE,
    kind: OpKind,
    out: CK_BYTE_PTR,
    out_len: CK_ULONG_PTR,
) -> CK_RV {
    with_provider(name, |p| {
        let cap = ending(p, h, kind, out_capacity(out, out_len))?;
        let r = p.token.cipher_final(h, kind, cap)?;
        Ok(write_out(r, out, out_len))
    })
}

/// # Safety
/// Pointers as the specification requires.
#[no_mangle]
pub unsafe extern "C" fn C_EncryptInit(
    h: CK_SESSION_HANDLE,
    m: CK_MECHANISM_PTR,
    key: CK_OBJECT_HANDLE,
) -> CK_RV {
    init("C_EncryptInit", h, OpKind::Encrypt, m, key)
}

/// # Safety
/// Pointers as the specification requires.
#[no_mangle]
pub unsafe extern "C" fn C_Encrypt(
    h: CK_SESSION_HANDLE,
    d: CK_BYTE_PTR,
    dl: CK_ULONG,
    o: CK_BYTE_PTR,
    ol: CK_ULONG_PTR,
) -> CK_RV {
    cipher_call("C_Encrypt", h, OpKind::Encrypt, false, d, dl, o, ol)
}

/// # Safety
/// Pointers as the specification requires.
#[no_mangle]
pub unsafe extern "C" fn C_EncryptUpdate(
    h: CK_SESSION_HANDLE,
    d: CK_BYTE_PTR,
    dl: CK_ULONG,
    o: CK_BYTE_PTR,
    ol: CK_ULONG_PTR,
) -> CK_RV {
    cipher_call("C_EncryptUpdate", h, OpKind::Encrypt, true, d, dl, o, ol)
}

/// # Safety
/// Pointers as the specification requires.
#[no_mangle]
pub unsafe extern "C" fn C_EncryptFinal(
    h: CK_SESSION_HANDLE,
    o: CK_BYTE_PTR,
    ol: CK_ULONG_PTR,
) -> CK_RV {
    cipher_final("C_EncryptFinal", h, OpKind::Encrypt, o, ol)
}

/// # Safety
/// Pointers as the specification requires.
#[no_mangle]
pub unsafe extern "C" fn C_DecryptInit(
    h: CK_SESSION_HANDLE,
    m: CK_MECHANISM_PTR,
    key: CK_OBJECT_HANDLE,
) -> CK_RV {
    init("C_DecryptInit", h, OpKind::Decrypt, m, key)
}

/// # Safety
/// Pointers as the specification requires.
#[no_mangle]
pub unsafe extern "C" fn C_Decrypt(
    h: CK_SESSION_HANDLE,
    d: CK_BYTE_PTR,
    dl: CK_ULONG,
    o: CK_BYTE_PTR,
    ol: CK_ULONG_PTR,
) -> CK_RV {
    cipher_call("C_Decrypt", h, OpKind::Decrypt, false, d, dl, o, ol)
}

/// # Safety
/// Pointers as the specification requires.
#[no_mangle]
pub unsafe extern "C" fn C_DecryptUpdate(
    h: CK_SESSION_HANDLE,
    d: CK_BYTE_PTR,
    dl: CK_ULONG,
    o: CK_BYTE_PTR,
    ol: CK_ULONG_PTR,
) -> CK_RV {
    cipher_call("C_DecryptUpdate", h, OpKind::Decrypt, true, d, dl, o, ol)
}

/// # Safety
/// Pointers as the specification requires.
#[no_mangle]
pub unsafe extern "C" fn C_DecryptFinal(
    h: CK_SESSION_HANDLE,
    o: CK_BYTE_PTR,
    ol: CK_ULONG_PTR,
) -> CK_RV {
    cipher_final("C_DecryptFinal", h, OpKind::Decrypt, o, ol)
}

/// # Safety
/// Pointers as the specification requires.
#[no_mangle]
pub unsafe extern "C" fn C_DigestInit(h: CK_SESSION_HANDLE, m: CK_MECHANISM_PTR) -> CK_RV {
    with_provider("C_DigestInit", |p| {
        if m.is_null() {
            p.token.digest_init(h, None)?;
            return Ok(CKR_OK);
        }
        let (mech, _) = mechanism::parse(m)?;
        p.token.digest_init(h, Some(&mech))?;
        Ok(CKR_OK)
    })
}

/// # Safety
/// Pointers as the specification requires.
#[no_mangle]
pub unsafe extern "C" fn C_Digest(
    h: CK_SESSION_HANDLE,
    d: CK_BYTE_PTR,
    dl: CK_ULONG,
    o: CK_BYTE_PTR,
    ol: CK_ULONG_PTR,
) -> CK_RV {
    with_provider("C_Digest", |p| {
        let data = ending(p, h, OpKind::Digest, bytes(d, dl))?;
        let cap = ending(p, h, OpKind::Digest, out_capacity(o, ol))?;
        Ok(write_out(p.token.digest(h, Some(data), cap)?, o, ol))
    })
}

/// # Safety
/// Pointers as the specification requires.
#[no_mangle]
pub unsafe extern "C" fn C_DigestUpdate(
    h: CK_SESSION_HANDLE,
    d: CK_BYTE_PTR,
    dl: CK_ULONG,
) -> CK_RV {
    with_provider("C_DigestUpdate", |p| {
        p.token
            .digest_update(h, ending(p, h, OpKind::Digest, bytes(d, dl))?)?;
        Ok(CKR_OK)
    })
}

#[no_mangle]
pub extern "C" fn C_DigestKey(h: CK_SESSION_HANDLE, key: CK_OBJECT_HANDLE) -> CK_RV {
    with_provider("C_DigestKey", |p| {
        p.token.digest_key(h, key)?;
        Ok(CKR_OK)
    })
}

/// # Safety
/// Pointers as the specification requires.
#[no_mangle]
pub unsafe extern "C" fn C_DigestFinal(
    h: CK_SESSION_HANDLE,
    o: CK_BYTE_PTR,
    ol: CK_ULONG_PTR,
) -> CK_RV {
    with_provider("C_DigestFinal", |p| {
        let cap = ending(p, h, OpKind::Digest, out_capacity(o, ol))?;
        Ok(write_out(p.token.digest(h, None, cap)?, o, ol))
    })
}

/// # Safety
/// Pointers as the specification requires.
#[no_mangle]
pub unsafe extern "C" fn C_SignInit(
    h: CK_SESSION_HANDLE,
    m: CK_MECHANISM_PTR,
    key: CK_OBJECT_HANDLE,
) -> CK_RV {
    init("C_SignInit", h, OpKind::Sign, m, key)
}

/// # Safety
/// Pointers as the specification requires.
#[no_mangle]
pub unsafe extern "C" fn C_Sign(
    h: CK_SESSION_HANDLE,
    d: CK_BYTE_PTR,
    dl: CK_ULONG,
    o: CK_BYTE_PTR,
    ol: CK_ULONG_PTR,
) -> CK_RV {
    with_provider("C_Sign", |p| {
        let data = ending(p, h, OpKind::Sign, bytes(d, dl))?;
        let cap = ending(p, h, OpKind::Sign, out_capacity(o, ol))?;
        Ok(write_out(p.token.sign(h, Some(data), cap)?, o, ol))
    })
}

/// # Safety
/// Pointers as the specification requires.
#[no_mangle]
pub unsafe extern "C" fn C_SignUpdate(h: CK_SESSION_HANDLE, d: CK_BYTE_PTR, dl: CK_ULONG) -> CK_RV {
    with_provider("C_SignUpdate", |p| {
        p.token
            .sign_update(h, ending(p, h, OpKind::Sign, bytes(d, dl))?)?;
        Ok(CKR_OK)
    })
}

/// # Safety
/// Pointers as the specification requires.
#[no_mangle]
pub unsafe extern "C" fn C_SignFinal(
    h: CK_SESSION_HANDLE,
    o: CK_BYTE_PTR,
    ol: CK_ULONG_PTR,
) -> CK_RV {
    with_provider("C_SignFinal", |p| {
        let cap = ending(p, h, OpKind::Sign, out_capacity(o, ol))?;
        Ok(write_out(p.token.sign(h, None, cap)?, o, ol))
    })
}

/// # Safety
/// Pointers as the specification requires.
#[no_mangle]
pub unsafe extern "C" fn C_VerifyInit(
    h: CK_SESSION_HANDLE,
    m: CK_MECHANISM_PTR,
    key: CK_OBJECT_HANDLE,
) -> CK_RV {
    init("C_VerifyInit", h, OpKind::Verify, m, key)
}

/// # Safety
/// Pointers as the specification requires.
#[no_mangle]
pub unsafe extern "C" fn C_Verify(
    h: CK_SESSION_HANDLE,
    d: CK_BYTE_PTR,
    dl: CK_ULONG,
    s: CK_BYTE_PTR,
    sl: CK_ULONG,
) -> CK_RV {
    with_provider("C_Verify", |p| {
        let data = ending(p, h, OpKind::Verify, bytes(d, dl))?;
        let sig = ending(p, h, OpKind::Verify, bytes(s, sl))?;
        p.token.verify(h, Some(data), sig)?;
        Ok(CKR_OK)
    })
}

/// # Safety
/// Pointers as the specification requires.
#[no_mangle]
pub unsafe extern "C" fn C_VerifyUpdate(
    h: CK_SESSION_HANDLE,
    d: CK_BYTE_PTR,
    dl: CK_ULONG,
) -> CK_RV {
    with_provider("C_VerifyUpdate", |p| {
        p.token
            .verify_update(h, ending(p, h, OpKind::Verify, bytes(d, dl))?)?;
        Ok(CKR_OK)
    })
}

/// # Safety
/// Pointers as the specification requires.
#[no_mangle]
pub unsafe extern "C" fn C_VerifyFinal(
    h: CK_SESSION_HANDLE,
    s: CK_BYTE_PTR,
    sl: CK_ULONG,
) -> CK_RV {
    with_provider("C_VerifyFinal", |p| {
        let sig = ending(p, h, OpKind::Verify, bytes(s, sl))?;
        p.token.verify(h, None, sig)?;
        Ok(CKR_OK)
    })
}

fn not_supported(name: &'static str, h: CK_SESSION_HANDLE) -> CK_RV {
    with_provider(name, |p| {
        p.token.session(h)?;
        Err(Error::new(
            CKR_FUNCTION_NOT_SUPPORTED,
            "not supported by this token",
        ))
    })
}

#[no_mangle]
pub extern "C" fn C_SignRecoverInit(
    h: CK_SESSION_HANDLE,
    _m: CK_MECHANISM_PTR,
    _k: CK_OBJECT_HANDLE,
) -> CK_RV {
    not_supported("C_SignRecoverInit", h)
}

#[no_mangle]
pub extern "C" fn C_SignRecover(
    h: CK_SESSION_HANDLE,
    _d: CK_BYTE_PTR,
    _dl: CK_ULONG,
    _o: CK_BYTE_PTR,
    _ol: CK_ULONG_PTR,
) -> CK_RV {
    not_supported("C_SignRecover", h)
}

#[no_mangle]
pub extern "C" fn C_VerifyRecoverInit(
    h: CK_SESSION_HANDLE,
    _m: CK_MECHANISM_PTR,
    _k: CK_OBJECT_HANDLE,
) -> CK_RV {
    not_supported("C_VerifyRecoverInit", h)
}

#[no_mangle]
pub extern "C" fn C_VerifyRecover(
    h: CK_SESSION_HANDLE,
    _s: CK_BYTE_PTR,
    _sl: CK_ULONG,
    _o: CK_BYTE_PTR,
    _ol: CK_ULONG_PTR,
) -> CK_RV {
    not_supported("C_VerifyRecover", h)
}

#[no_mangle]
pub extern "C" fn C_DigestEncryptUpdate(
    h: CK_SESSION_HANDLE,
    _d: CK_BYTE_PTR,
    _dl: CK_ULONG,
    _o: CK_BYTE_PTR,
    _ol: CK_ULONG_PTR,
) -> CK_RV {
    not_supported("C_DigestEncryptUpdate", h)
}

#[no_mangle]
pub extern "C" fn C_DecryptDigestUpdate(
    h: CK_SESSION_HANDLE,
    _d: CK_BYTE_PTR,
    _dl: CK_ULONG,
    _o: CK_BYTE_PTR,
    _ol: CK_ULONG_PTR,
) -> CK_RV {
    not_supported("C_DecryptDigestUpdate", h)
}

#[no_mangle]
pub extern "C" fn C_SignEncryptUpdate(
    h: CK_SESSION_HANDLE,
    _d: CK_BYTE_PTR,
    _dl: CK_ULONG,
    _o: CK_BYTE_PTR,
    _ol: CK_ULONG_PTR,
) -> CK_RV {
    not_supported("C_SignEncryptUpdate", h)
}

#[no_mangle]
pub extern "C" fn C_DecryptVerifyUpdate(
    h: CK_SESSION_HANDLE,
    _d: CK_BYTE_PTR,
    _dl: CK_ULONG,
    _o: CK_BYTE_PTR,
    _ol: CK_ULONG_PTR,
) -> CK_RV {
    not_supported("C_DecryptVerifyUpdate", h)
}
