//! Key wrapping: AES Key Wrap (RFC 3394) and with padding (RFC 5649), AES-GCM,
//! AES-CBC-PAD, RSA-OAEP and RSA PKCS#1 v1.5.
//!
//! The payload is a secret key's raw value or a private key's PKCS#8 DER. Errors are
//! those of `C_WrapKey`/`C_UnwrapKey`: the payload's size -> `CKR_KEY_SIZE_RANGE`;
//! the wrapping key's kind or size -> `CKR_(UN)WRAPPING_KEY_TYPE_INCONSISTENT` /
//! `_SIZE_RANGE`; wrapped data of a wrong length -> `CKR_WRAPPED_KEY_LEN_RANGE`;
//! integrity failure -> `CKR_WRAPPED_KEY_INVALID`.

use super::aes::aes_key;
use super::{CipherOp, KeyMaterial};
use crate::error::{Error, Result};
use crate::hsm::mechanism::Mechanism;
use aes_kw::{KekAes128, KekAes192, KekAes256};
use pkcs11_sys::*;
use zeroize::Zeroizing;

/// RFC 3394 default initial value.
const KW_DEFAULT_IV: [u8; 8] = [0xA6; 8];
/// RFC 5649 alternative initial value's constant half.
const KWP_DEFAULT_IV: [u8; 4] = [0xA6, 0x59, 0x59, 0xA6];

fn map_wrapping_key(e: Error, unwrap: bool) -> Error {
    let rv = match (e.rv, unwrap) {
        (CKR_KEY_TYPE_INCONSISTENT, false) => CKR_WRAPPING_KEY_TYPE_INCONSISTENT,
        (CKR_KEY_TYPE_INCONSISTENT, true) => CKR_UNWRAPPING_KEY_TYPE_INCONSISTENT,
        (CKR_KEY_SIZE_RANGE, false) => CKR_WRAPPING_KEY_SIZE_RANGE,
        (CKR_KEY_SIZE_RANGE, true) => CKR_UNWRAPPING_KEY_SIZE_RANGE,
        (rv, _) => rv,
    };
    Error { rv, msg: e.msg }
}

fn map_wrap_data(e: Error) -> Error {
    let rv = match e.rv {
        CKR_DATA_LEN_RANGE => CKR_KEY_SIZE_RANGE,
        rv => rv,
    };
    Error { rv, msg: e.msg }
}

fn map_unwrap_data(e: Error) -> Error {
    let rv = match e.rv {
        CKR_ENCRYPTED_DATA_LEN_RANGE => CKR_WRAPPED_KEY_LEN_RANGE,
        CKR_ENCRYPTED_DATA_INVALID => CKR_WRAPPED_KEY_INVALID,
        rv => rv,
    };
    Error { rv, msg: e.msg }
}

enum Kek {
    A128(KekAes128),
    A192(KekAes192),
    A256(KekAes256),
}

macro_rules! kek_call {
    ($kek:expr, $method:ident, $data:expr) => {
        match $kek {
            Kek::A128(k) => k.$method($data),
            Kek::A192(k) => k.$method($data),
            Kek::A256(k) => k.$method($data),
        }
    };
}

fn kek(key: &KeyMaterial, unwrap: bool) -> Result<Kek> {
    let raw = aes_key(key).map_err(|e| map_wrapping_key(e, unwrap))?;
    let bad = |_| map_wrapping_key(Error::new(CKR_KEY_SIZE_RANGE, "AES key size"), unwrap);
    Ok(match raw.len() {
        16 => Kek::A128(KekAes128::try_from(raw).map_err(bad)?),
        24 => Kek::A192(KekAes192::try_from(raw).map_err(bad)?),
        _ => Kek::A256(KekAes256::try_from(raw).map_err(bad)?),
    })
}

fn check_kw_iv(iv: &Option<[u8; 8]>) -> Result<()> {
    match iv {
        Some(v) if *v != KW_DEFAULT_IV => Err(Error::mech_param(
            "alternative AES key wrap IVs are not supported",
        )),
        _ => Ok(()),
    }
}

fn check_kwp_iv(iv: &Option<[u8; 4]>) -> Result<()> {
    match iv {
        Some(v) if *v != KWP_DEFAULT_IV => Err(Error::mech_param(
            "alternative AES key wrap IVs are not supported",
        )),
        _ => Ok(()),
    }
}

/// Run a whole cipher operation over `input`.
fn run(op: &mut dyn CipherOp, input: &[u8], out: &mut Vec<u8>) -> Result<()> {
    out.reserve(
        op.update_len(input.len())
            .saturating_add(op.final_len())
            .saturating_add(16),
    );
    op.update(input, out)?;
    out.reserve(op.final_len());
    op.finish(out)
}

pub(crate) fn wrap(mech: &Mechanism, key: &KeyMaterial, payload: &[u8]) -> Result<Vec<u8>> {
    match mech {
        Mechanism::AesKeyWrap { iv } => {
            check_kw_iv(iv)?;
            let kek = kek(key, false)?;
            if payload.len() < 16 || payload.len() % 8 != 0 {
                return Err(Error::new(
                    CKR_KEY_SIZE_RANGE,
                    "AES key wrap needs a multiple of 8 bytes, at least 16",
                ));
            }
            kek_call!(&kek, wrap_vec, payload)
                .map_err(|e| Error::new(CKR_KEY_SIZE_RANGE, format!("AES key wrap: {e}")))
        }
        Mechanism::AesKeyWrapPad { iv } => {
            check_kwp_iv(iv)?;
            let kek = kek(key, false)?;
            if payload.is_empty() || payload.len() > u32::MAX as usize {
                return Err(Error::new(
                    CKR_KEY_SIZE_RANGE,
                    "AES key wrap with padding: payload size",
                ));
            }
            kek_call!(&kek, wrap_with_padding_vec, payload)
                .map_err(|e| Error::new(CKR_KEY_SIZE_RANGE, format!("AES key wrap: {e}")))
        }
        Mechanism::AesGcm { .. }
        | Mechanism::AesCbcPad { .. }
        | Mechanism::RsaOaep { .. }
        | Mechanism::RsaPkcs => {
            let mut op = super::encrypt(mech, key).map_err(|e| map_wrapping_key(e, false))?;
            let mut out = Vec::new();
            run(op.as_mut(), payload, &mut out).map_err(map_wrap_data)?;
            Ok(out)
        }
        _ => Err(Error::mech_invalid("mechanism cannot wrap")),
    }
}

pub(crate) fn unwrap(
    mech: &Mechanism,
    key: &KeyMaterial,
    wrapped: &[u8],
) -> Result<Zeroizing<Vec<u8>>> {
    let integrity = |_| {
        Error::new(
            CKR_WRAPPED_KEY_INVALID,
            "wrapped key integrity check failed",
        )
    };
    match mech {
        Mechanism::AesKeyWrap { iv } => {
            check_kw_iv(iv)?;
            let kek = kek(key, true)?;
            if wrapped.len() < 24 || wrapped.len() % 8 != 0 {
                return Err(Error::new(
                    CKR_WRAPPED_KEY_LEN_RANGE,
                    "AES key wrap: wrapped length",
                ));
            }
            kek_call!(&kek, unwrap_vec, wrapped)
                .map(Zeroizing::new)
                .map_err(integrity)
        }
        Mechanism::AesKeyWrapPad { iv } => {
            check_kwp_iv(iv)?;
            let kek = kek(key, true)?;
            if wrapped.len() < 16 || wrapped.len() % 8 != 0 {
                return Err(Error::new(
                    CKR_WRAPPED_KEY_LEN_RANGE,
                    "AES key wrap: wrapped length",
                ));
            }
            kek_call!(&kek, unwrap_with_padding_vec, wrapped)
                .map(Zeroizing::new)
                .map_err(integrity)
        }
        Mechanism::AesGcm { .. }
        | Mechanism::AesCbcPad { .. }
        | Mechanism::RsaOaep { .. }
        | Mechanism::RsaPkcs => {
            let mut op = super::decrypt(mech, key).map_err(|e| map_wrapping_key(e, true))?;
            let mut out = Zeroizing::new(Vec::new());
            run(op.as_mut(), wrapped, &mut out).map_err(map_unwrap_data)?;
            if out.is_empty() {
                return Err(Error::new(CKR_WRAPPED_KEY_INVALID, "empty wrapped key"));
            }
            Ok(out)
        }
        _ => Err(Error::mech_invalid("mechanism cannot unwrap")),
    }
}
