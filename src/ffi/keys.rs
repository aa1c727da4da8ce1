//! Key management and random numbers (PKCS#11 v2.40 §5.13–5.14).

use super::args::{bytes, out_capacity, out_ref, template, write_out};
use super::mechanism;
use super::with_provider;
use crate::error::Error;
use pkcs11_sys::*;

/// # Safety
/// Pointers as the specification requires.
#[no_mangle]
pub unsafe extern "C" fn C_GenerateKey(
    h: CK_SESSION_HANDLE,
    m: CK_MECHANISM_PTR,
    tpl: CK_ATTRIBUTE_PTR,
    count: CK_ULONG,
    out: CK_OBJECT_HANDLE_PTR,
) -> CK_RV {
    with_provider("C_GenerateKey", |p| {
        let (mech, _) = mechanism::parse(m)?;
        let t = template(tpl, count)?;
        let out = out_ref(out)?;
        *out = p.token.generate_key(h, &mech, &t)?;
        Ok(CKR_OK)
    })
}

/// # Safety
/// Pointers as the specification requires.
#[no_mangle]
pub unsafe extern "C" fn C_GenerateKeyPair(
    h: CK_SESSION_HANDLE,
    m: CK_MECHANISM_PTR,
    pub_tpl: CK_ATTRIBUTE_PTR,
    pub_count: CK_ULONG,
    priv_tpl: CK_ATTRIBUTE_PTR,
    priv_count: CK_ULONG,
    pub_out: CK_OBJECT_HANDLE_PTR,
    priv_out: CK_OBJECT_HANDLE_PTR,
) -> CK_RV {
    with_provider("C_GenerateKeyPair", |p| {
        let (mech, _) = mechanism::parse(m)?;
        let pt = template(pub_tpl, pub_count)?;
        let st = template(priv_tpl, priv_count)?;
        let pub_out = out_ref(pub_out)?;
        let priv_out = out_ref(priv_out)?;
        let (ph, sh) = p.token.generate_key_pair(h, &mech, &pt, &st)?;
        *pub_out = ph;
        *priv_out = sh;
        Ok(CKR_OK)
    })
}

/// # Safety
/// Pointers as the specification requires.
#[no_mangle]
pub unsafe extern "C" fn C_WrapKey(
    h: CK_SESSION_HANDLE,
    m: CK_MECHANISM_PTR,
    wrapping: CK_OBJECT_HANDLE,
    key: CK_OBJECT_HANDLE,
    out: CK_BYTE_PTR,
    out_len: CK_ULONG_PTR,
) -> CK_RV {
    with_provider("C_WrapKey", |p| {
        let (mech, t) = mechanism::parse(m)?;
        let cap = out_capacity(out, out_len)?;
        let r = p.token.wrap_key(h, &mech, t, wrapping, key, cap)?;
        Ok(write_out(r, out, out_len))
    })
}

/// # Safety
/// Pointers as the specification requires.
#[no_mangle]
pub unsafe extern "C" fn C_UnwrapKey(
    h: CK_SESSION_HANDLE,
    m: CK_MECHANISM_PTR,
    unwrapping: CK_OBJECT_HANDLE,
    wrapped: CK_BYTE_PTR,
    wrapped_len: CK_ULONG,
    tpl: CK_ATTRIBUTE_PTR,
    count: CK_ULONG,
    out: CK_OBJECT_HANDLE_PTR,
) -> CK_RV {
    with_provider("C_UnwrapKey", |p| {
        let (mech, t) = mechanism::parse(m)?;
        let data = bytes(wrapped, wrapped_len)?;
        let tpl = template(tpl, count)?;
        let out = out_ref(out)?;
        *out = p.token.unwrap_key(h, &mech, t, unwrapping, data, &tpl)?;
        Ok(CKR_OK)
    })
}

/// # Safety
/// Pointers as the specification requires.
#[no_mangle]
pub unsafe extern "C" fn C_DeriveKey(
    h: CK_SESSION_HANDLE,
    m: CK_MECHANISM_PTR,
    base: CK_OBJECT_HANDLE,
    tpl: CK_ATTRIBUTE_PTR,
    count: CK_ULONG,
    out: CK_OBJECT_HANDLE_PTR,
) -> CK_RV {
    with_provider("C_DeriveKey", |p| {
        let (mech, t) = mechanism::parse(m)?;
        let tpl = template(tpl, count)?;
        let out = out_ref(out)?;
        *out = p.token.derive_key(h, &mech, t, base, &tpl)?;
        Ok(CKR_OK)
    })
}

#[no_mangle]
pub extern "C" fn C_SeedRandom(h: CK_SESSION_HANDLE, _seed: CK_BYTE_PTR, _len: CK_ULONG) -> CK_RV {
    with_provider("C_SeedRandom", |p| {
        p.token.session(h)?;
        Err(Error::new(
            CKR_RANDOM_SEED_NOT_SUPPORTED,
            "the RNG takes no seed",
        ))
    })
}

/// # Safety
/// `out` writable for `len` bytes.
#[no_mangle]
pub unsafe extern "C" fn C_GenerateRandom(
    h: CK_SESSION_HANDLE,
    out: CK_BYTE_PTR,
    len: CK_ULONG,
) -> CK_RV {
    with_provider("C_GenerateRandom", |p| {
        if len == 0 {
            p.token.session(h)?;
            return Ok(CKR_OK);
        }
        if out.is_null() {
            return Err(Error::args("NULL buffer"));
        }
        let buf = std::slice::from_raw_parts_mut(out, len as usize);
        p.token.random(h, buf)?;
        Ok(CKR_OK)
    })
}
