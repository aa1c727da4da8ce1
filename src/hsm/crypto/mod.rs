//! The embedded instance's cryptography (RustCrypto). Pure functions and small
//! streaming contexts over typed key material; no PKCS#11 types, no storage.
//!
//! Output-length contract (the C ABI's two-call convention rests on it):
//! `update_len`/`final_len`/`sign_len` return an upper bound that is exact for every
//! mechanism except padded decryption, and never smaller than the real output.
//!
//! Nothing here panics on any input: every length and every parse is checked and
//! turned into an [`Error`] carrying the `CK_RV` the C ABI will return.

mod import;
pub mod key;
// Implementation modules are private; everything goes through the free functions below.
mod aes;
mod digest;
mod ec;
/// The aws-lc-rs engine for RSA and ECDSA (feature `aws-lc`, on by default); without
/// it, RustCrypto does everything.
#[cfg(feature = "aws-lc")]
pub mod fast;
#[cfg(not(feature = "aws-lc"))]
#[path = "fast_off.rs"]
pub mod fast;
mod rsa;
mod wrap;

#[cfg(test)]
mod tests;
#[cfg(test)]
mod tests_keys;
#[cfg(test)]
mod tests_wycheproof;

pub use key::{EcPrivate, EcPublic, KeyMaterial};

use crate::error::{Error, Result};
use crate::hsm::mechanism::{Curve, EcKdf, HashAlg, Mechanism};
use pkcs11_sys::*;
use rand::RngCore;
use zeroize::Zeroizing;

/// A running encryption or decryption.
pub trait CipherOp: Send {
    /// Upper bound of what `update` will append for `input_len` more bytes.
    fn update_len(&self, input_len: usize) -> usize;
    /// Process more input, appending whatever output is ready to `out`.
    fn update(&mut self, input: &[u8], out: &mut Vec<u8>) -> Result<()>;
    /// Upper bound of what `finish` will append.
    fn final_len(&self) -> usize;
    /// Finish, appending the rest (padding, GCM tag / verified plaintext) to `out`.
    fn finish(&mut self, out: &mut Vec<u8>) -> Result<()>;
}

/// A running signature or MAC.
pub trait SignOp: Send {
    fn update(&mut self, data: &[u8]) -> Result<()>;
    /// Exact length of the signature.
    fn sign_len(&self) -> usize;
    fn finish(&mut self) -> Result<Vec<u8>>;
}

/// A running verification. `finish` returns `CKR_SIGNATURE_INVALID` or
/// `CKR_SIGNATURE_LEN_RANGE` on a bad signature.
pub trait VerifyOp: Send {
    fn update(&mut self, data: &[u8]) -> Result<()>;
    fn finish(&mut self, signature: &[u8]) -> Result<()>;
}

pub trait DigestOp: Send {
    fn update(&mut self, data: &[u8]);
    fn output_len(&self) -> usize;
    fn finish(&mut self) -> Vec<u8>;
}

/// Fill `buf` from the operating system's RNG.
pub fn random_bytes(buf: &mut [u8]) {
    rand::rngs::OsRng.fill_bytes(buf);
}

/// A fresh random secret (AES key, generic secret, HMAC key) of `len` bytes.
pub fn generate_secret(len: usize) -> KeyMaterial {
    let mut v = Zeroizing::new(vec![0u8; len]);
    random_bytes(&mut v);
    KeyMaterial::Secret(v)
}

/// A fresh EC private key on `curve`.
/// A fresh EC key pair: (private, public).
pub fn generate_ec_pair(curve: Curve) -> (KeyMaterial, Option<KeyMaterial>) {
    match fast::generate_ec_pair(curve) {
        Some((k, p)) => (k, Some(p)),
        None => (ec::generate(curve), None),
    }
}

pub fn generate_ec(curve: Curve) -> KeyMaterial {
    fast::generate_ec(curve).unwrap_or_else(|| ec::generate(curve))
}

/// A fresh RSA private key. `bits` in 2048..=4096 (else `CKR_KEY_SIZE_RANGE`);
/// `public_exponent` big-endian, empty for 65537; it must be odd, >= 3 and fit in
/// 64 bits (and the rsa crate's limit of 2^33-1), else `CKR_ATTRIBUTE_VALUE_INVALID`.
pub fn generate_rsa(bits: usize, public_exponent: &[u8]) -> Result<KeyMaterial> {
    match fast::generate_rsa(bits, public_exponent) {
        Some(k) => Ok(k),
        None => rsa::generate(bits, public_exponent),
    }
}

/// Start an encryption. See the module docs of each mechanism family for errors.
pub fn encrypt(mech: &Mechanism, key: &KeyMaterial) -> Result<Box<dyn CipherOp>> {
    match mech {
        Mechanism::AesEcb
        | Mechanism::AesCbc { .. }
        | Mechanism::AesCbcPad { .. }
        | Mechanism::AesCtr { .. }
        | Mechanism::AesGcm { .. } => aes::cipher(mech, key, true),
        Mechanism::RsaPkcs | Mechanism::RsaOaep { .. } => rsa::cipher(mech, key, true),
        _ => Err(Error::mech_invalid("mechanism cannot encrypt")),
    }
}

/// Start a decryption.
pub fn decrypt(mech: &Mechanism, key: &KeyMaterial) -> Result<Box<dyn CipherOp>> {
    match mech {
        Mechanism::AesEcb
        | Mechanism::AesCbc { .. }
        | Mechanism::AesCbcPad { .. }
        | Mechanism::AesCtr { .. }
        | Mechanism::AesGcm { .. } => aes::cipher(mech, key, false),
        Mechanism::RsaPkcs | Mechanism::RsaOaep { .. } => rsa::cipher(mech, key, false),
        _ => Err(Error::mech_invalid("mechanism cannot decrypt")),
    }
}

/// Start a signature or MAC.
pub fn sign(mech: &Mechanism, key: &KeyMaterial) -> Result<Box<dyn SignOp>> {
    match mech {
        Mechanism::Ecdsa(h) => ec::sign(*h, key),
        Mechanism::RsaPkcs | Mechanism::RsaPkcsHash(_) | Mechanism::RsaPss { .. } => {
            rsa::sign(mech, key)
        }
        Mechanism::Hmac(h) => digest::hmac_sign(*h, key),
        _ => Err(Error::mech_invalid("mechanism cannot sign")),
    }
}

/// Start a verification.
pub fn verify(mech: &Mechanism, key: &KeyMaterial) -> Result<Box<dyn VerifyOp>> {
    match mech {
        Mechanism::Ecdsa(h) => ec::verify(*h, key),
        Mechanism::RsaPkcs | Mechanism::RsaPkcsHash(_) | Mechanism::RsaPss { .. } => {
            rsa::verify(mech, key)
        }
        Mechanism::Hmac(h) => digest::hmac_verify(*h, key),
        _ => Err(Error::mech_invalid("mechanism cannot verify")),
    }
}

/// Start a digest.
pub fn digest(hash: HashAlg) -> Box<dyn DigestOp> {
    digest::digest(hash)
}

/// Wrap `payload` (a secret key's raw value, or a private key's PKCS#8 DER) under `wrapping_key`.
pub fn wrap(mech: &Mechanism, wrapping_key: &KeyMaterial, payload: &[u8]) -> Result<Vec<u8>> {
    wrap::wrap(mech, wrapping_key, payload)
}

/// Inverse of [`wrap`]: integrity failure -> `CKR_WRAPPED_KEY_INVALID`, bad length ->
/// `CKR_WRAPPED_KEY_LEN_RANGE`.
pub fn unwrap(
    mech: &Mechanism,
    unwrapping_key: &KeyMaterial,
    wrapped: &[u8],
) -> Result<Zeroizing<Vec<u8>>> {
    wrap::unwrap(mech, unwrapping_key, wrapped)
}

/// ECDH (CKM_ECDH1_DERIVE): `public_data` is the peer's point, raw SEC1 or DER OCTET
/// STRING-wrapped (both accepted, as OpenSC and NSS send either); result truncated
/// (CKD_NULL: the leading bytes are removed, as PKCS#11 specifies) or derived
/// (X9.63 KDF) to `out_len` bytes.
pub fn ecdh_derive(
    private: &KeyMaterial,
    kdf: EcKdf,
    shared_data: &[u8],
    public_data: &[u8],
    out_len: usize,
) -> Result<Zeroizing<Vec<u8>>> {
    ec::derive(private, kdf, shared_data, public_data, out_len)
}

/// Helper: the error for a key of the wrong kind.
pub(crate) fn wrong_key(what: &'static str) -> Error {
    Error::new(CKR_KEY_TYPE_INCONSISTENT, what)
}
