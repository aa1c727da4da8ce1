//! RSA: key generation, PKCS#1 v1.5 and OAEP encryption, PKCS#1 v1.5 and PSS
//! signatures. Private-key operations are blinded.

use super::digest::{hasher, Accumulator};
use super::{CipherOp, KeyMaterial, SignOp, VerifyOp};
use crate::error::{Error, Result};
use crate::hsm::mechanism::{HashAlg, Mechanism, PssParams};
use ::rsa::traits::PublicKeyParts;
use ::rsa::{BigUint, Oaep, Pkcs1v15Encrypt, Pkcs1v15Sign, Pss, RsaPrivateKey, RsaPublicKey};
use pkcs11_sys::*;
use rand::rngs::OsRng;
use sha1::Sha1;
use sha2::{Sha224, Sha256, Sha384, Sha512};
use zeroize::Zeroizing;

pub(crate) fn generate(bits: usize, public_exponent: &[u8]) -> Result<KeyMaterial> {
    if !(2048..=4096).contains(&bits) {
        return Err(Error::new(
            CKR_KEY_SIZE_RANGE,
            format!("RSA modulus of {bits} bits"),
        ));
    }
    let e = super::key::strip_zeros(public_exponent);
    let e: u64 = if public_exponent.is_empty() {
        65537
    } else {
        if e.len() > 8 {
            return Err(Error::attr_value(
                CKA_PUBLIC_EXPONENT,
                "larger than 64 bits",
            ));
        }
        e.iter().fold(0u64, |acc, &b| (acc << 8) | u64::from(b))
    };
    if e < 3 || e % 2 == 0 || e > RsaPublicKey::MAX_PUB_EXPONENT {
        return Err(Error::attr_value(
            CKA_PUBLIC_EXPONENT,
            "must be odd, >= 3 and < 2^33",
        ));
    }
    let key = RsaPrivateKey::new_with_exp(&mut OsRng, bits, &BigUint::from(e))
        .map_err(|err| Error::general(format!("RSA key generation: {err}")))?;
    Ok(KeyMaterial::RsaPrivate(Box::new(key)))
}

fn public_of(key: &KeyMaterial) -> Result<RsaPublicKey> {
    match key {
        KeyMaterial::RsaPublic(k) => Ok(k.clone()),
        KeyMaterial::RsaPrivate(k) => Ok(k.to_public_key()),
        _ => Err(super::wrong_key("needs an RSA key")),
    }
}

fn private_of(key: &KeyMaterial) -> Result<RsaPrivateKey> {
    match key {
        KeyMaterial::RsaPrivate(k) => Ok((**k).clone()),
        _ => Err(super::wrong_key("needs an RSA private key")),
    }
}

/// OAEP with `hash` for the label and `mgf` for MGF1. The rsa crate keeps the label
/// as a `String`: a label that is not UTF-8 is `CKR_MECHANISM_PARAM_INVALID`.
fn oaep(hash: HashAlg, mgf: HashAlg, label: &[u8]) -> Result<Oaep> {
    let label = if label.is_empty() {
        None
    } else {
        Some(
            String::from_utf8(label.to_vec())
                .map_err(|_| Error::mech_param("OAEP labels must be UTF-8 here"))?,
        )
    };
    Ok(Oaep {
        digest: hasher(hash),
        mgf_digest: hasher(mgf),
        label,
    })
}

enum Padding {
    Pkcs1,
    Oaep {
        hash: HashAlg,
        mgf: HashAlg,
        label: Vec<u8>,
    },
}

enum CipherKey {
    Public(RsaPublicKey),
    Private(Box<RsaPrivateKey>),
}

/// Buffers the input; does the RSA operation in `finish`.
struct RsaCipher {
    key: CipherKey,
    padding: Padding,
    k: usize,
    buf: Zeroizing<Vec<u8>>,
    done: bool,
}

pub(crate) fn cipher(
    mech: &Mechanism,
    key: &KeyMaterial,
    encrypt: bool,
) -> Result<Box<dyn CipherOp>> {
    let padding = match mech {
        Mechanism::RsaPkcs => Padding::Pkcs1,
        Mechanism::RsaOaep { hash, mgf, label } => {
            oaep(*hash, *mgf, label)?; // validate now
            Padding::Oaep {
                hash: *hash,
                mgf: *mgf,
                label: label.clone(),
            }
        }
        _ => return Err(Error::mech_invalid("not an RSA encryption mechanism")),
    };
    let key = if encrypt {
        CipherKey::Public(public_of(key)?)
    } else {
        CipherKey::Private(Box::new(private_of(key)?))
    };
    let k = match &key {
        CipherKey::Public(p) => p.size(),
        CipherKey::Private(p) => p.size(),
    };
    Ok(Box::new(RsaCipher {
        key,
        padding,
        k,
        buf: Zeroizing::new(Vec::new()),
        done: false,
    }))
}

impl RsaCipher {
    fn max_plain(&self) -> usize {
        match &self.padding {
            Padding::Pkcs1 => self.k.saturating_sub(11),
            Padding::Oaep { hash, .. } => self.k.saturating_sub(2 * hash.output_len() + 2),
        }
    }
    fn encrypting(&self) -> bool {
        matches!(self.key, CipherKey::Public(_))
    }
}

impl CipherOp for RsaCipher {
    fn update_len(&self, _input_len: usize) -> usize {
        0
    }

    fn update(&mut self, input: &[u8], _out: &mut Vec<u8>) -> Result<()> {
        if self.done {
            return Err(Error::new(
                CKR_OPERATION_NOT_INITIALIZED,
                "operation already finished",
            ));
        }
        if self.buf.len().saturating_add(input.len()) > self.k {
            return Err(if self.encrypting() {
                Error::new(CKR_DATA_LEN_RANGE, "data too long for the RSA key")
            } else {
                Error::new(
                    CKR_ENCRYPTED_DATA_LEN_RANGE,
                    "ciphertext longer than the modulus",
                )
            });
        }
        self.buf.extend_from_slice(input);
        Ok(())
    }

    fn final_len(&self) -> usize {
        if self.encrypting() {
            self.k
        } else {
            self.max_plain()
        }
    }

    fn finish(&mut self, out: &mut Vec<u8>) -> Result<()> {
        if self.done {
            return Err(Error::new(
                CKR_OPERATION_NOT_INITIALIZED,
                "operation already finished",
            ));
        }
        self.done = true;
        let data = Zeroizing::new(std::mem::take(&mut *self.buf));
        match &self.key {
            CipherKey::Public(p) => {
                if data.len() > self.max_plain() {
                    return Err(Error::new(
                        CKR_DATA_LEN_RANGE,
                        "data too long for the RSA key",
                    ));
                }
                let r = match &self.padding {
                    Padding::Pkcs1 => p.encrypt(&mut OsRng, Pkcs1v15Encrypt, &data),
                    Padding::Oaep { hash, mgf, label } => {
                        p.encrypt(&mut OsRng, oaep(*hash, *mgf, label)?, &data)
                    }
                };
                let c =
                    r.map_err(|e| Error::new(CKR_DATA_LEN_RANGE, format!("RSA encryption: {e}")))?;
                out.extend_from_slice(&c);
            }
            CipherKey::Private(s) => {
                if data.len() != self.k {
                    return Err(Error::new(
                        CKR_ENCRYPTED_DATA_LEN_RANGE,
                        "ciphertext is not the modulus length",
                    ));
                }
                let r = match &self.padding {
                    Padding::Pkcs1 => s.decrypt_blinded(&mut OsRng, Pkcs1v15Encrypt, &data),
                    Padding::Oaep { hash, mgf, label } => {
                        s.decrypt_blinded(&mut OsRng, oaep(*hash, *mgf, label)?, &data)
                    }
                };
                let p = Zeroizing::new(r.map_err(|_| {
                    Error::new(CKR_ENCRYPTED_DATA_INVALID, "RSA decryption failed")
                })?);
                out.extend_from_slice(&p);
            }
        }
        Ok(())
    }
}

/// The signature scheme, built afresh for each use (the rsa crate consumes it).
#[derive(Clone)]
enum Scheme {
    /// `CKM_RSA_PKCS`: the data is the DigestInfo.
    Raw,
    /// `CKM_SHAxxx_RSA_PKCS`.
    Pkcs1(HashAlg),
    Pss(PssParams),
}

impl Scheme {
    fn from_mech(mech: &Mechanism, modulus_bits: usize) -> Result<(Scheme, Accumulator)> {
        let k = modulus_bits.div_ceil(8);
        Ok(match mech {
            Mechanism::RsaPkcs => (Scheme::Raw, Accumulator::raw(k.saturating_sub(11))),
            Mechanism::RsaPkcsHash(h) => (Scheme::Pkcs1(*h), Accumulator::hashing(*h)),
            Mechanism::RsaPss { params, prehashed } => {
                if params.mgf != params.hash {
                    return Err(Error::mech_param(
                        "PSS with an MGF1 hash other than the message hash",
                    ));
                }
                // EMSA-PSS: emLen = ceil((modBits - 1) / 8) >= hLen + sLen + 2
                let em_len = modulus_bits.saturating_sub(1).div_ceil(8);
                if params
                    .hash
                    .output_len()
                    .saturating_add(params.salt_len)
                    .saturating_add(2)
                    > em_len
                {
                    return Err(Error::mech_param("PSS salt too long for the key"));
                }
                let acc = if *prehashed {
                    Accumulator::raw(params.hash.output_len())
                } else {
                    Accumulator::hashing(params.hash)
                };
                (Scheme::Pss(params.clone()), acc)
            }
            _ => return Err(Error::mech_invalid("not an RSA signature mechanism")),
        })
    }

    /// The length the (hashed) data must have, if fixed.
    fn data_len(&self) -> Option<usize> {
        match self {
            Scheme::Raw => None,
            Scheme::Pkcs1(h) => Some(h.output_len()),
            Scheme::Pss(p) => Some(p.hash.output_len()),
        }
    }

    fn pkcs1(&self) -> Option<Pkcs1v15Sign> {
        match self {
            Scheme::Raw => Some(Pkcs1v15Sign::new_unprefixed()),
            Scheme::Pkcs1(h) => Some(match h {
                HashAlg::Sha1 => Pkcs1v15Sign::new::<Sha1>(),
                HashAlg::Sha224 => Pkcs1v15Sign::new::<Sha224>(),
                HashAlg::Sha256 => Pkcs1v15Sign::new::<Sha256>(),
                HashAlg::Sha384 => Pkcs1v15Sign::new::<Sha384>(),
                HashAlg::Sha512 => Pkcs1v15Sign::new::<Sha512>(),
            }),
            Scheme::Pss(_) => None,
        }
    }

    fn pss(&self) -> Option<Pss> {
        match self {
            Scheme::Pss(p) => Some(Pss {
                blinded: false,
                digest: hasher(p.hash),
                salt_len: p.salt_len,
            }),
            _ => None,
        }
    }

    fn check_len(&self, data: &[u8]) -> Result<()> {
        match self.data_len() {
            Some(n) if n != data.len() => {
                Err(Error::new(CKR_DATA_LEN_RANGE, "hash of the wrong length"))
            }
            _ => Ok(()),
        }
    }
}

struct RsaSign {
    key: Box<RsaPrivateKey>,
    scheme: Scheme,
    acc: Accumulator,
}

pub(crate) fn sign(mech: &Mechanism, key: &KeyMaterial) -> Result<Box<dyn SignOp>> {
    let key = Box::new(private_of(key)?);
    let (scheme, acc) = Scheme::from_mech(mech, key.n().bits())?;
    Ok(Box::new(RsaSign { key, scheme, acc }))
}

impl SignOp for RsaSign {
    fn update(&mut self, data: &[u8]) -> Result<()> {
        self.acc.update(data)
    }
    fn sign_len(&self) -> usize {
        self.key.size()
    }
    fn finish(&mut self) -> Result<Vec<u8>> {
        let data = self.acc.take();
        self.scheme.check_len(&data)?;
        let failed = |e: ::rsa::Error| Error::general(format!("RSA signing failed: {e}"));
        if let Some(p) = self.scheme.pkcs1() {
            if data.len().saturating_add(p.prefix.len()).saturating_add(11) > self.key.size() {
                return Err(Error::new(
                    CKR_DATA_LEN_RANGE,
                    "data too long for the RSA key",
                ));
            }
            self.key.sign_with_rng(&mut OsRng, p, &data).map_err(failed)
        } else if let Some(p) = self.scheme.pss() {
            self.key.sign_with_rng(&mut OsRng, p, &data).map_err(failed)
        } else {
            Err(Error::general("RSA signature scheme"))
        }
    }
}

struct RsaVerify {
    key: RsaPublicKey,
    scheme: Scheme,
    acc: Accumulator,
}

pub(crate) fn verify(mech: &Mechanism, key: &KeyMaterial) -> Result<Box<dyn VerifyOp>> {
    let key = public_of(key)?;
    let (scheme, acc) = Scheme::from_mech(mech, key.n().bits())?;
    Ok(Box::new(RsaVerify { key, scheme, acc }))
}

impl VerifyOp for RsaVerify {
    fn update(&mut self, data: &[u8]) -> Result<()> {
        self.acc.update(data)
    }
    fn finish(&mut self, signature: &[u8]) -> Result<()> {
        let data = self.acc.take();
        self.scheme.check_len(&data)?;
        if signature.len() != self.key.size() {
            return Err(Error::new(CKR_SIGNATURE_LEN_RANGE, "RSA signature length"));
        }
        let bad = |_| Error::new(CKR_SIGNATURE_INVALID, "RSA signature does not verify");
        if let Some(p) = self.scheme.pkcs1() {
            self.key.verify(p, &data, signature).map_err(bad)
        } else if let Some(p) = self.scheme.pss() {
            self.key.verify(p, &data, signature).map_err(bad)
        } else {
            Err(Error::general("RSA signature scheme"))
        }
    }
}
