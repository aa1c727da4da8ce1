//! ECDSA (P-256, P-384; signatures as raw r||s) and ECDH with the X9.63 KDF.

use super::digest::{hash, Accumulator};
use super::key::{EcPrivate, EcPublic};
use super::{KeyMaterial, SignOp, VerifyOp};
use crate::error::{Error, Result};
use crate::hsm::mechanism::{Curve, EcKdf, HashAlg};
use pkcs11_sys::*;
use rand::rngs::OsRng;
use signature::hazmat::{PrehashVerifier, RandomizedPrehashSigner};
use zeroize::Zeroizing;

/// Longest data `CKM_ECDSA` (the caller hashes) accepts; only the leftmost field
/// length bytes count anyway.
const MAX_RAW_ECDSA: usize = 1024;

pub(crate) fn generate(curve: Curve) -> KeyMaterial {
    KeyMaterial::EcPrivate(match curve {
        Curve::P256 => EcPrivate::P256(p256::SecretKey::random(&mut OsRng)),
        Curve::P384 => EcPrivate::P384(p384::SecretKey::random(&mut OsRng)),
    })
}

/// SEC1 bits2int for byte-aligned fields: the leftmost `field_len` bytes of a longer
/// hash, or a shorter one left-padded with zeros.
fn hash_to_field(data: &[u8], field_len: usize) -> Zeroizing<Vec<u8>> {
    let mut out = Zeroizing::new(vec![0u8; field_len]);
    if data.len() >= field_len {
        for (d, s) in out.iter_mut().zip(data) {
            *d = *s;
        }
    } else {
        let skip = field_len - data.len();
        for (d, s) in out.iter_mut().skip(skip).zip(data) {
            *d = *s;
        }
    }
    out
}

enum Signer {
    P256(p256::ecdsa::SigningKey),
    P384(p384::ecdsa::SigningKey),
}

struct EcdsaSign {
    key: Signer,
    acc: Accumulator,
    field_len: usize,
}

pub(crate) fn sign(hash: Option<HashAlg>, key: &KeyMaterial) -> Result<Box<dyn SignOp>> {
    let KeyMaterial::EcPrivate(k) = key else {
        return Err(super::wrong_key("ECDSA signing needs an EC private key"));
    };
    let signer = match k {
        EcPrivate::P256(s) => Signer::P256(p256::ecdsa::SigningKey::from(s)),
        EcPrivate::P384(s) => Signer::P384(p384::ecdsa::SigningKey::from(s)),
    };
    Ok(Box::new(EcdsaSign {
        key: signer,
        acc: Accumulator::new(hash, MAX_RAW_ECDSA),
        field_len: k.curve().field_len(),
    }))
}

fn sign_failed(e: signature::Error) -> Error {
    Error::general(format!("ECDSA signing failed: {e}"))
}

impl SignOp for EcdsaSign {
    fn update(&mut self, data: &[u8]) -> Result<()> {
        self.acc.update(data)
    }
    fn sign_len(&self) -> usize {
        2 * self.field_len
    }
    fn finish(&mut self) -> Result<Vec<u8>> {
        let z = hash_to_field(&self.acc.take(), self.field_len);
        Ok(match &self.key {
            Signer::P256(k) => {
                let s: p256::ecdsa::Signature = k
                    .sign_prehash_with_rng(&mut OsRng, &z)
                    .map_err(sign_failed)?;
                s.to_bytes().to_vec()
            }
            Signer::P384(k) => {
                let s: p384::ecdsa::Signature = k
                    .sign_prehash_with_rng(&mut OsRng, &z)
                    .map_err(sign_failed)?;
                s.to_bytes().to_vec()
            }
        })
    }
}

enum Verifier {
    P256(p256::ecdsa::VerifyingKey),
    P384(p384::ecdsa::VerifyingKey),
}

struct EcdsaVerify {
    key: Verifier,
    acc: Accumulator,
    field_len: usize,
}

pub(crate) fn verify(hash: Option<HashAlg>, key: &KeyMaterial) -> Result<Box<dyn VerifyOp>> {
    let public = match key {
        KeyMaterial::EcPublic(p) => p.clone(),
        KeyMaterial::EcPrivate(k) => k.public(),
        _ => return Err(super::wrong_key("ECDSA verification needs an EC key")),
    };
    let field_len = public.curve().field_len();
    let key = match public {
        EcPublic::P256(p) => Verifier::P256(p256::ecdsa::VerifyingKey::from(&p)),
        EcPublic::P384(p) => Verifier::P384(p384::ecdsa::VerifyingKey::from(&p)),
    };
    Ok(Box::new(EcdsaVerify {
        key,
        acc: Accumulator::new(hash, MAX_RAW_ECDSA),
        field_len,
    }))
}

fn bad_sig() -> Error {
    Error::new(CKR_SIGNATURE_INVALID, "ECDSA signature does not verify")
}

impl VerifyOp for EcdsaVerify {
    fn update(&mut self, data: &[u8]) -> Result<()> {
        self.acc.update(data)
    }
    fn finish(&mut self, signature: &[u8]) -> Result<()> {
        let z = hash_to_field(&self.acc.take(), self.field_len);
        if signature.len() != 2 * self.field_len {
            return Err(Error::new(
                CKR_SIGNATURE_LEN_RANGE,
                "ECDSA signature length",
            ));
        }
        match &self.key {
            Verifier::P256(k) => {
                let s = p256::ecdsa::Signature::from_slice(signature).map_err(|_| bad_sig())?;
                k.verify_prehash(&z, &s).map_err(|_| bad_sig())
            }
            Verifier::P384(k) => {
                let s = p384::ecdsa::Signature::from_slice(signature).map_err(|_| bad_sig())?;
                k.verify_prehash(&z, &s).map_err(|_| bad_sig())
            }
        }
    }
}

/// The peer's point: raw SEC1 (compressed or uncompressed) or that wrapped in a DER
/// OCTET STRING. A raw encoding of the right length is taken as raw.
fn peer_point(curve: Curve, data: &[u8]) -> Option<EcPublic> {
    let f = curve.field_len();
    let raw_len_ok = match data.first() {
        Some(0x04) => data.len() == 1 + 2 * f,
        Some(0x02 | 0x03) => data.len() == 1 + f,
        _ => false,
    };
    if raw_len_ok {
        return EcPublic::from_sec1(curve, data);
    }
    let inner = der_octet_string(data)?;
    EcPublic::from_sec1(curve, inner)
}

/// The content of a DER OCTET STRING that is exactly `data`.
fn der_octet_string(data: &[u8]) -> Option<&[u8]> {
    let (&tag, rest) = data.split_first()?;
    if tag != 0x04 {
        return None;
    }
    let (&len0, rest) = rest.split_first()?;
    let (len, body) = match len0 {
        0..=0x7f => (usize::from(len0), rest),
        0x81 => {
            let (&l, body) = rest.split_first()?;
            if l < 0x80 {
                return None; // not minimal DER
            }
            (usize::from(l), body)
        }
        _ => return None,
    };
    (body.len() == len).then_some(body)
}

/// ANSI X9.63 KDF: Hash(Z || counter32 || SharedInfo) for counter = 1, 2, ...
pub(crate) fn x963_kdf(
    h: HashAlg,
    z: &[u8],
    shared_info: &[u8],
    out_len: usize,
) -> Zeroizing<Vec<u8>> {
    let mut out = Zeroizing::new(Vec::with_capacity(out_len + h.output_len()));
    let mut counter: u32 = 1;
    let mut input = Zeroizing::new(Vec::with_capacity(z.len() + 4 + shared_info.len()));
    while out.len() < out_len {
        input.clear();
        input.extend_from_slice(z);
        input.extend_from_slice(&counter.to_be_bytes());
        input.extend_from_slice(shared_info);
        let block = Zeroizing::new(hash(h, &input));
        out.extend_from_slice(&block);
        counter = counter.wrapping_add(1);
    }
    out.truncate(out_len);
    out
}

/// Largest output of the X9.63 KDF we produce (PKCS#11 keys are far smaller).
const MAX_KDF_OUT: usize = 1 << 16;

pub(crate) fn derive(
    private: &KeyMaterial,
    kdf: EcKdf,
    shared_data: &[u8],
    public_data: &[u8],
    out_len: usize,
) -> Result<Zeroizing<Vec<u8>>> {
    let KeyMaterial::EcPrivate(k) = private else {
        return Err(super::wrong_key("ECDH needs an EC private key"));
    };
    let curve = k.curve();
    let peer = peer_point(curve, public_data)
        .ok_or_else(|| Error::mech_param("peer public point is not a point of the key's curve"))?;
    let z: Zeroizing<Vec<u8>> = match (k, &peer) {
        (EcPrivate::P256(s), EcPublic::P256(p)) => {
            let shared = p256::ecdh::diffie_hellman(s.to_nonzero_scalar(), p.as_affine());
            Zeroizing::new(shared.raw_secret_bytes().to_vec())
        }
        (EcPrivate::P384(s), EcPublic::P384(p)) => {
            let shared = p384::ecdh::diffie_hellman(s.to_nonzero_scalar(), p.as_affine());
            Zeroizing::new(shared.raw_secret_bytes().to_vec())
        }
        _ => return Err(Error::mech_param("peer point on another curve")),
    };
    if out_len == 0 {
        return Err(Error::new(CKR_KEY_SIZE_RANGE, "derived key length 0"));
    }
    match kdf {
        EcKdf::Null => {
            if !shared_data.is_empty() {
                return Err(Error::mech_param("CKD_NULL takes no shared data"));
            }
            // PKCS#11: "The truncation removes bytes from the leading end of the secret value."
            let skip = z.len().checked_sub(out_len).ok_or_else(|| {
                Error::new(
                    CKR_KEY_SIZE_RANGE,
                    "derived key longer than the shared secret",
                )
            })?;
            Ok(Zeroizing::new(z.get(skip..).unwrap_or(&[]).to_vec()))
        }
        EcKdf::X963(h) => {
            if out_len > MAX_KDF_OUT {
                return Err(Error::new(CKR_KEY_SIZE_RANGE, "derived key too long"));
            }
            Ok(x963_kdf(h, &z, shared_data, out_len))
        }
    }
}
