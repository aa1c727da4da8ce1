//! Message digests (SHA-1, SHA-2) and HMAC; the data accumulator shared by the
//! signature mechanisms.

use super::{DigestOp, KeyMaterial, SignOp, VerifyOp};
use crate::error::{Error, Result};
use crate::hsm::mechanism::HashAlg;
use ::digest::DynDigest;
use hmac::{Hmac, Mac};
use pkcs11_sys::*;
use sha1::Sha1;
use sha2::{Sha224, Sha256, Sha384, Sha512};

/// A boxed hasher for `hash`.
pub(crate) fn hasher(hash: HashAlg) -> Box<dyn DynDigest + Send + Sync> {
    match hash {
        HashAlg::Sha1 => Box::new(Sha1::default()),
        HashAlg::Sha224 => Box::new(Sha224::default()),
        HashAlg::Sha256 => Box::new(Sha256::default()),
        HashAlg::Sha384 => Box::new(Sha384::default()),
        HashAlg::Sha512 => Box::new(Sha512::default()),
    }
}

/// One-shot hash.
pub(crate) fn hash(alg: HashAlg, data: &[u8]) -> Vec<u8> {
    let mut h = hasher(alg);
    h.update(data);
    h.finalize_reset().into_vec()
}

struct Digest {
    inner: Box<dyn DynDigest + Send + Sync>,
}

impl DigestOp for Digest {
    fn update(&mut self, data: &[u8]) {
        self.inner.update(data);
    }
    fn output_len(&self) -> usize {
        self.inner.output_size()
    }
    fn finish(&mut self) -> Vec<u8> {
        self.inner.finalize_reset().into_vec()
    }
}

pub(crate) fn digest(hash: HashAlg) -> Box<dyn DigestOp> {
    Box::new(Digest {
        inner: hasher(hash),
    })
}

/// What a signature mechanism does with the data it is given: keep it (the raw
/// mechanisms, whose data is a hash or DigestInfo) or hash it as it comes.
pub(crate) enum Accumulator {
    Raw { buf: Vec<u8>, max: usize },
    Hash(Box<dyn DynDigest + Send + Sync>),
}

impl Accumulator {
    /// Keep up to `max` bytes; more is `CKR_DATA_LEN_RANGE`.
    pub(crate) fn raw(max: usize) -> Accumulator {
        Accumulator::Raw {
            buf: Vec::new(),
            max,
        }
    }
    pub(crate) fn hashing(alg: HashAlg) -> Accumulator {
        Accumulator::Hash(hasher(alg))
    }
    pub(crate) fn new(alg: Option<HashAlg>, max_raw: usize) -> Accumulator {
        match alg {
            Some(h) => Accumulator::hashing(h),
            None => Accumulator::raw(max_raw),
        }
    }
    pub(crate) fn update(&mut self, data: &[u8]) -> Result<()> {
        match self {
            Accumulator::Raw { buf, max } => {
                if buf.len().saturating_add(data.len()) > *max {
                    return Err(Error::new(
                        CKR_DATA_LEN_RANGE,
                        "data too long for the mechanism",
                    ));
                }
                buf.extend_from_slice(data);
            }
            Accumulator::Hash(h) => h.update(data),
        }
        Ok(())
    }
    /// The data (raw) or its hash; the accumulator is reset.
    pub(crate) fn take(&mut self) -> Vec<u8> {
        match self {
            Accumulator::Raw { buf, .. } => std::mem::take(buf),
            Accumulator::Hash(h) => h.finalize_reset().into_vec(),
        }
    }
}

trait MacAlg: Mac + hmac::digest::KeyInit + Send + 'static {}
impl<T: Mac + hmac::digest::KeyInit + Send + 'static> MacAlg for T {}

struct HmacOp<M: MacAlg> {
    mac: Option<M>,
    len: usize,
}

fn finished() -> Error {
    Error::new(CKR_OPERATION_NOT_INITIALIZED, "operation already finished")
}

impl<M: MacAlg> HmacOp<M> {
    fn new(key: &KeyMaterial, len: usize) -> Result<Self> {
        let KeyMaterial::Secret(k) = key else {
            return Err(super::wrong_key("HMAC needs a secret key"));
        };
        if k.is_empty() {
            return Err(Error::new(CKR_KEY_SIZE_RANGE, "empty HMAC key"));
        }
        let mac = <M as hmac::digest::KeyInit>::new_from_slice(k)
            .map_err(|_| Error::new(CKR_KEY_SIZE_RANGE, "HMAC key length"))?;
        Ok(HmacOp {
            mac: Some(mac),
            len,
        })
    }
}

impl<M: MacAlg> SignOp for HmacOp<M> {
    fn update(&mut self, data: &[u8]) -> Result<()> {
        self.mac.as_mut().ok_or_else(finished)?.update(data);
        Ok(())
    }
    fn sign_len(&self) -> usize {
        self.len
    }
    fn finish(&mut self) -> Result<Vec<u8>> {
        let mac = self.mac.take().ok_or_else(finished)?;
        Ok(mac.finalize().into_bytes().to_vec())
    }
}

impl<M: MacAlg> VerifyOp for HmacOp<M> {
    fn update(&mut self, data: &[u8]) -> Result<()> {
        SignOp::update(self, data)
    }
    fn finish(&mut self, signature: &[u8]) -> Result<()> {
        let mac = self.mac.take().ok_or_else(finished)?;
        if signature.len() != self.len {
            return Err(Error::new(CKR_SIGNATURE_LEN_RANGE, "HMAC length"));
        }
        // verify_slice compares in constant time.
        mac.verify_slice(signature)
            .map_err(|_| Error::new(CKR_SIGNATURE_INVALID, "HMAC mismatch"))
    }
}

pub(crate) fn hmac_sign(h: HashAlg, key: &KeyMaterial) -> Result<Box<dyn SignOp>> {
    let len = h.output_len();
    Ok(match h {
        HashAlg::Sha1 => Box::new(HmacOp::<Hmac<Sha1>>::new(key, len)?),
        HashAlg::Sha224 => Box::new(HmacOp::<Hmac<Sha224>>::new(key, len)?),
        HashAlg::Sha256 => Box::new(HmacOp::<Hmac<Sha256>>::new(key, len)?),
        HashAlg::Sha384 => Box::new(HmacOp::<Hmac<Sha384>>::new(key, len)?),
        HashAlg::Sha512 => Box::new(HmacOp::<Hmac<Sha512>>::new(key, len)?),
    })
}

pub(crate) fn hmac_verify(h: HashAlg, key: &KeyMaterial) -> Result<Box<dyn VerifyOp>> {
    let len = h.output_len();
    Ok(match h {
        HashAlg::Sha1 => Box::new(HmacOp::<Hmac<Sha1>>::new(key, len)?),
        HashAlg::Sha224 => Box::new(HmacOp::<Hmac<Sha224>>::new(key, len)?),
        HashAlg::Sha256 => Box::new(HmacOp::<Hmac<Sha256>>::new(key, len)?),
        HashAlg::Sha384 => Box::new(HmacOp::<Hmac<Sha384>>::new(key, len)?),
        HashAlg::Sha512 => Box::new(HmacOp::<Hmac<Sha512>>::new(key, len)?),
    })
}
