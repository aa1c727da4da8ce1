//! Typed key material and its self-describing sealed-storage encoding.
//!
//! Encoding: one tag byte, then
//! - `0x01` secret: the raw value;
//! - `0x02` EC private key: PKCS#8 DER (the curve is in the algorithm parameters);
//! - `0x03` EC public key on P-256, `0x04` on P-384: the SEC1 uncompressed point;
//! - `0x05` RSA private key: PKCS#8 DER;
//! - `0x06` RSA public key: PKCS#1 `RSAPublicKey` DER.

use crate::error::{Error, Result};
use crate::hsm::mechanism::Curve;
use ::rsa::pkcs1::EncodeRsaPublicKey;
use ::rsa::pkcs8::{DecodePrivateKey, EncodePrivateKey};
use ::rsa::traits::PublicKeyParts;
use ::rsa::BigUint;
use pkcs11_sys::*;
use zeroize::Zeroizing;

/// Smallest and largest RSA modulus (bits) accepted from outside (import, storage).
pub(crate) const RSA_MIN_BITS: usize = 512;
pub(crate) const RSA_MAX_BITS: usize = 4096;

const TAG_SECRET: u8 = 0x01;
const TAG_EC_PRIVATE: u8 = 0x02;
const TAG_EC_PUBLIC_P256: u8 = 0x03;
const TAG_EC_PUBLIC_P384: u8 = 0x04;
const TAG_RSA_PRIVATE: u8 = 0x05;
const TAG_RSA_PUBLIC: u8 = 0x06;

/// Longest encoding `decode` will look at (a 4096-bit RSA PKCS#8 is about 2.4 KB).
const MAX_ENCODED: usize = 16 * 1024;

#[derive(Clone)]
pub enum EcPrivate {
    P256(p256::SecretKey),
    P384(p384::SecretKey),
}

#[derive(Clone, PartialEq, Eq)]
pub enum EcPublic {
    P256(p256::PublicKey),
    P384(p384::PublicKey),
}

#[derive(Clone)]
pub enum KeyMaterial {
    /// AES key or generic secret / HMAC key.
    Secret(Zeroizing<Vec<u8>>),
    EcPrivate(EcPrivate),
    EcPublic(EcPublic),
    RsaPrivate(Box<::rsa::RsaPrivateKey>),
    RsaPublic(::rsa::RsaPublicKey),
}

impl std::fmt::Debug for KeyMaterial {
    /// Kind and size only: never the value.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            KeyMaterial::Secret(v) => write!(f, "Secret({} bytes)", v.len()),
            KeyMaterial::EcPrivate(k) => write!(f, "EcPrivate({:?})", k.curve()),
            KeyMaterial::EcPublic(k) => write!(f, "EcPublic({:?})", k.curve()),
            KeyMaterial::RsaPrivate(k) => write!(f, "RsaPrivate({} bits)", k.n().bits()),
            KeyMaterial::RsaPublic(k) => write!(f, "RsaPublic({} bits)", k.n().bits()),
        }
    }
}

impl std::fmt::Debug for EcPrivate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "EcPrivate({:?})", self.curve())
    }
}

impl std::fmt::Debug for EcPublic {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "EcPublic({:?})", self.curve())
    }
}

impl EcPrivate {
    pub fn curve(&self) -> Curve {
        match self {
            EcPrivate::P256(_) => Curve::P256,
            EcPrivate::P384(_) => Curve::P384,
        }
    }
    pub fn public(&self) -> EcPublic {
        match self {
            EcPrivate::P256(k) => EcPublic::P256(k.public_key()),
            EcPrivate::P384(k) => EcPublic::P384(k.public_key()),
        }
    }
}

impl EcPublic {
    pub fn curve(&self) -> Curve {
        match self {
            EcPublic::P256(_) => Curve::P256,
            EcPublic::P384(_) => Curve::P384,
        }
    }
    /// SEC1 uncompressed point.
    pub fn to_uncompressed(&self) -> Vec<u8> {
        use elliptic_curve::sec1::ToEncodedPoint;
        match self {
            EcPublic::P256(k) => k.to_encoded_point(false).as_bytes().to_vec(),
            EcPublic::P384(k) => k.to_encoded_point(false).as_bytes().to_vec(),
        }
    }
    /// Parse a raw SEC1 point (compressed or uncompressed); `None` if it is not a
    /// valid point of `curve` (identity included).
    pub fn from_sec1(curve: Curve, point: &[u8]) -> Option<EcPublic> {
        match curve {
            Curve::P256 => p256::PublicKey::from_sec1_bytes(point)
                .ok()
                .map(EcPublic::P256),
            Curve::P384 => p384::PublicKey::from_sec1_bytes(point)
                .ok()
                .map(EcPublic::P384),
        }
    }
}

fn corrupt() -> Error {
    Error::device("corrupt key material")
}

fn big(bytes: &[u8]) -> BigUint {
    BigUint::from_bytes_be(bytes)
}

/// Run a third-party parser that is not supposed to panic, turning a panic into `None`
/// anyway: `decode` is fed arbitrary bytes and must never bring the process down.
fn guarded<T>(f: impl FnOnce() -> Option<T> + std::panic::UnwindSafe) -> Option<T> {
    std::panic::catch_unwind(f).ok().flatten()
}

fn rsa_bits_ok(bits: usize) -> bool {
    (RSA_MIN_BITS..=RSA_MAX_BITS).contains(&bits)
}

fn rsa_private_from_pkcs8(der: &[u8]) -> Option<::rsa::RsaPrivateKey> {
    if der.len() > MAX_ENCODED {
        return None;
    }
    let k = guarded(|| ::rsa::RsaPrivateKey::from_pkcs8_der(der).ok())?;
    rsa_bits_ok(k.n().bits()).then_some(k)
}

fn rsa_public_from_parts(n: &[u8], e: &[u8]) -> Option<::rsa::RsaPublicKey> {
    let n = strip_zeros(n);
    let e = strip_zeros(e);
    if n.is_empty() || n.len() > RSA_MAX_BITS / 8 || e.is_empty() || e.len() > 8 {
        return None;
    }
    let (n, e) = (big(n), big(e));
    if !rsa_bits_ok(n.bits()) {
        return None;
    }
    guarded(move || ::rsa::RsaPublicKey::new(n, e).ok())
}

pub(crate) fn strip_zeros(b: &[u8]) -> &[u8] {
    let first = b.iter().position(|&x| x != 0).unwrap_or(b.len());
    b.get(first..).unwrap_or(&[])
}

impl KeyMaterial {
    /// Self-describing encoding for sealed storage: a tag byte + raw secret / PKCS#8 DER /
    /// SEC1 point / PKCS#1 public DER.
    pub fn encode(&self) -> Result<Zeroizing<Vec<u8>>> {
        let mut out = Zeroizing::new(Vec::new());
        match self {
            KeyMaterial::Secret(v) => {
                out.reserve(1 + v.len());
                out.push(TAG_SECRET);
                out.extend_from_slice(v);
            }
            KeyMaterial::EcPrivate(_) | KeyMaterial::RsaPrivate(_) => {
                let der = self.private_to_pkcs8()?;
                out.reserve(1 + der.len());
                out.push(if matches!(self, KeyMaterial::EcPrivate(_)) {
                    TAG_EC_PRIVATE
                } else {
                    TAG_RSA_PRIVATE
                });
                out.extend_from_slice(&der);
            }
            KeyMaterial::EcPublic(k) => {
                out.push(match k.curve() {
                    Curve::P256 => TAG_EC_PUBLIC_P256,
                    Curve::P384 => TAG_EC_PUBLIC_P384,
                });
                out.extend_from_slice(&k.to_uncompressed());
            }
            KeyMaterial::RsaPublic(k) => {
                let der = k
                    .to_pkcs1_der()
                    .map_err(|e| Error::general(format!("RSA public key encoding: {e}")))?;
                out.push(TAG_RSA_PUBLIC);
                out.extend_from_slice(der.as_bytes());
            }
        }
        Ok(out)
    }

    /// Inverse of [`encode`](Self::encode). Never panics; garbage gives
    /// `CKR_DEVICE_ERROR` "corrupt key material".
    pub fn decode(bytes: &[u8]) -> Result<KeyMaterial> {
        let (&tag, body) = bytes.split_first().ok_or_else(corrupt)?;
        if body.len() > MAX_ENCODED {
            return Err(corrupt());
        }
        let key = match tag {
            TAG_SECRET => KeyMaterial::Secret(Zeroizing::new(body.to_vec())),
            TAG_EC_PRIVATE => match ec_private_from_pkcs8(body) {
                Some(k) => KeyMaterial::EcPrivate(k),
                None => return Err(corrupt()),
            },
            TAG_EC_PUBLIC_P256 | TAG_EC_PUBLIC_P384 => {
                let curve = if tag == TAG_EC_PUBLIC_P256 {
                    Curve::P256
                } else {
                    Curve::P384
                };
                KeyMaterial::EcPublic(EcPublic::from_sec1(curve, body).ok_or_else(corrupt)?)
            }
            TAG_RSA_PRIVATE => {
                KeyMaterial::RsaPrivate(Box::new(rsa_private_from_pkcs8(body).ok_or_else(corrupt)?))
            }
            TAG_RSA_PUBLIC => {
                let parsed = guarded(|| {
                    let k = ::rsa::pkcs1::RsaPublicKey::try_from(body).ok()?;
                    Some((
                        k.modulus.as_bytes().to_vec(),
                        k.public_exponent.as_bytes().to_vec(),
                    ))
                });
                let (n, e) = parsed.ok_or_else(corrupt)?;
                KeyMaterial::RsaPublic(rsa_public_from_parts(&n, &e).ok_or_else(corrupt)?)
            }
            _ => return Err(corrupt()),
        };
        Ok(key)
    }

    pub fn curve(&self) -> Option<Curve> {
        match self {
            KeyMaterial::EcPrivate(k) => Some(k.curve()),
            KeyMaterial::EcPublic(k) => Some(k.curve()),
            _ => None,
        }
    }

    pub fn rsa_bits(&self) -> Option<usize> {
        match self {
            KeyMaterial::RsaPrivate(k) => Some(k.n().bits()),
            KeyMaterial::RsaPublic(k) => Some(k.n().bits()),
            _ => None,
        }
    }

    pub fn secret_len(&self) -> Option<usize> {
        match self {
            KeyMaterial::Secret(v) => Some(v.len()),
            _ => None,
        }
    }

    /// EcPrivate / RsaPrivate.
    pub fn is_private(&self) -> bool {
        matches!(self, KeyMaterial::EcPrivate(_) | KeyMaterial::RsaPrivate(_))
    }

    /// The public half (EC point / RSA n,e) of a private key, or a clone of a public key.
    pub fn public_material(&self) -> Option<KeyMaterial> {
        match self {
            KeyMaterial::Secret(_) => None,
            KeyMaterial::EcPrivate(k) => Some(KeyMaterial::EcPublic(k.public())),
            KeyMaterial::EcPublic(k) => Some(KeyMaterial::EcPublic(k.clone())),
            KeyMaterial::RsaPrivate(k) => Some(KeyMaterial::RsaPublic(k.to_public_key())),
            KeyMaterial::RsaPublic(k) => Some(KeyMaterial::RsaPublic(k.clone())),
        }
    }

    /// SEC1 uncompressed point (0x04||X||Y), raw (not DER-wrapped).
    pub fn ec_point(&self) -> Option<Vec<u8>> {
        match self {
            KeyMaterial::EcPrivate(k) => Some(k.public().to_uncompressed()),
            KeyMaterial::EcPublic(k) => Some(k.to_uncompressed()),
            _ => None,
        }
    }

    /// Big-endian, no leading zeros.
    pub fn rsa_modulus(&self) -> Option<Vec<u8>> {
        match self {
            KeyMaterial::RsaPrivate(k) => Some(k.n().to_bytes_be()),
            KeyMaterial::RsaPublic(k) => Some(k.n().to_bytes_be()),
            _ => None,
        }
    }

    /// Big-endian, no leading zeros.
    pub fn rsa_public_exponent(&self) -> Option<Vec<u8>> {
        match self {
            KeyMaterial::RsaPrivate(k) => Some(k.e().to_bytes_be()),
            KeyMaterial::RsaPublic(k) => Some(k.e().to_bytes_be()),
            _ => None,
        }
    }

    /// Raw SEC1 (compressed or uncompressed); invalid -> `CKR_ATTRIBUTE_VALUE_INVALID`.
    pub fn ec_public_from_point(curve: Curve, point: &[u8]) -> Result<KeyMaterial> {
        EcPublic::from_sec1(curve, point)
            .map(KeyMaterial::EcPublic)
            .ok_or_else(|| Error::attr_value(CKA_EC_POINT, "not a point of the curve"))
    }

    /// RSA public key from big-endian modulus and exponent; invalid (modulus outside
    /// 512..=4096 bits, even or too large exponent) -> `CKR_ATTRIBUTE_VALUE_INVALID`.
    pub fn rsa_public_from(n: &[u8], e: &[u8]) -> Result<KeyMaterial> {
        rsa_public_from_parts(n, e)
            .map(KeyMaterial::RsaPublic)
            .ok_or_else(|| Error::attr_value(CKA_MODULUS, "invalid RSA public key"))
    }

    /// RSA (512..=4096 bits) or EC P-256/P-384 private key from PKCS#8 DER; anything
    /// else -> `CKR_WRAPPED_KEY_INVALID`.
    pub fn private_from_pkcs8(der: &[u8]) -> Result<KeyMaterial> {
        if let Some(k) = ec_private_from_pkcs8(der) {
            return Ok(KeyMaterial::EcPrivate(k));
        }
        if let Some(k) = rsa_private_from_pkcs8(der) {
            return Ok(KeyMaterial::RsaPrivate(Box::new(k)));
        }
        Err(Error::new(
            CKR_WRAPPED_KEY_INVALID,
            "not a PKCS#8 RSA or P-256/P-384 private key",
        ))
    }

    /// PKCS#8 DER of a private key; other kinds -> `CKR_KEY_TYPE_INCONSISTENT`.
    pub fn private_to_pkcs8(&self) -> Result<Zeroizing<Vec<u8>>> {
        let doc = match self {
            KeyMaterial::EcPrivate(EcPrivate::P256(k)) => k.to_pkcs8_der(),
            KeyMaterial::EcPrivate(EcPrivate::P384(k)) => k.to_pkcs8_der(),
            KeyMaterial::RsaPrivate(k) => k.to_pkcs8_der(),
            _ => return Err(super::wrong_key("not a private key")),
        }
        .map_err(|e| Error::general(format!("PKCS#8 encoding: {e}")))?;
        Ok(Zeroizing::new(doc.as_bytes().to_vec()))
    }
}

fn ec_private_from_pkcs8(der: &[u8]) -> Option<EcPrivate> {
    if der.len() > MAX_ENCODED {
        return None;
    }
    guarded(|| {
        if let Ok(k) = p256::SecretKey::from_pkcs8_der(der) {
            return Some(EcPrivate::P256(k));
        }
        p384::SecretKey::from_pkcs8_der(der)
            .ok()
            .map(EcPrivate::P384)
    })
}
