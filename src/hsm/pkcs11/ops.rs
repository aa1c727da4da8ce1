//! Operations on keys that live in a PKCS#11 backend. Input is gathered in memory and
//! the backend is called once, at the end: no backend session is held between calls,
//! and an operation can be replayed on another member if this one fails.
//!
//! Hashing mechanisms run as "hash here, raw mechanism there" (CKM_ECDSA on the digest,
//! CKM_RSA_PKCS on the DigestInfo): the result is identical and backends that lack the
//! combined mechanisms (SoftHSM2 has no CKM_ECDSA_SHA256) still serve.

use super::Inner;
use crate::error::{Error, Result};
use crate::hsm::crypto::{self, CipherOp, SignOp, VerifyOp};
use crate::hsm::mechanism::{HashAlg, Mechanism, PssParams};
use cryptoki::mechanism::rsa::{PkcsMgfType, PkcsOaepParams, PkcsOaepSource, PkcsPssParams};
use cryptoki::mechanism::{aead::GcmParams, Mechanism as Ck, MechanismType};
use pkcs11_sys::*;
use std::sync::Arc;
use uuid::Uuid;

fn hash_type(h: HashAlg) -> MechanismType {
    match h {
        HashAlg::Sha1 => MechanismType::SHA1,
        HashAlg::Sha224 => MechanismType::SHA224,
        HashAlg::Sha256 => MechanismType::SHA256,
        HashAlg::Sha384 => MechanismType::SHA384,
        HashAlg::Sha512 => MechanismType::SHA512,
    }
}

fn mgf(h: HashAlg) -> PkcsMgfType {
    match h {
        HashAlg::Sha1 => PkcsMgfType::MGF1_SHA1,
        HashAlg::Sha224 => PkcsMgfType::MGF1_SHA224,
        HashAlg::Sha256 => PkcsMgfType::MGF1_SHA256,
        HashAlg::Sha384 => PkcsMgfType::MGF1_SHA384,
        HashAlg::Sha512 => PkcsMgfType::MGF1_SHA512,
    }
}

/// Run `f` with the backend's form of a mechanism (its parameters borrow from here).
pub fn with_ck<T>(m: &Mechanism, f: impl FnOnce(&Ck) -> T) -> Result<T> {
    let unsupported = || {
        Error::mech_invalid(format!(
            "{m:?} is not available on keys held by an external instance"
        ))
    };
    Ok(match m {
        Mechanism::AesEcb => f(&Ck::AesEcb),
        Mechanism::AesCbc { iv } => f(&Ck::AesCbc(*iv)),
        Mechanism::AesCbcPad { iv } => f(&Ck::AesCbcPad(*iv)),
        Mechanism::AesGcm { iv, aad, tag_bits } => {
            let mut iv = iv.clone();
            let params = GcmParams::new(&mut iv, aad, (*tag_bits as u64).into())
                .map_err(|_| Error::mech_param("GCM parameters"))?;
            f(&Ck::AesGcm(params))
        }
        Mechanism::AesKeyWrap { iv: None } => f(&Ck::AesKeyWrap),
        Mechanism::AesKeyWrapPad { iv: None } => f(&Ck::AesKeyWrapPad),
        Mechanism::Ecdsa(None) => f(&Ck::Ecdsa),
        Mechanism::RsaPkcs => f(&Ck::RsaPkcs),
        Mechanism::RsaPss {
            params,
            prehashed: true,
        } => f(&Ck::RsaPkcsPss(PkcsPssParams {
            hash_alg: hash_type(params.hash),
            mgf: mgf(params.mgf),
            s_len: (params.salt_len as u64).into(),
        })),
        Mechanism::RsaOaep {
            hash,
            mgf: g,
            label,
        } => {
            let source = if label.is_empty() {
                PkcsOaepSource::empty()
            } else {
                PkcsOaepSource::data_specified(label)
            };
            f(&Ck::RsaPkcsOaep(PkcsOaepParams::new(
                hash_type(*hash),
                mgf(*g),
                source,
            )))
        }
        Mechanism::Hmac(h) => f(&match h {
            HashAlg::Sha1 => Ck::Sha1Hmac,
            HashAlg::Sha224 => Ck::Sha224Hmac,
            HashAlg::Sha256 => Ck::Sha256Hmac,
            HashAlg::Sha384 => Ck::Sha384Hmac,
            HashAlg::Sha512 => Ck::Sha512Hmac,
        }),
        _ => return Err(unsupported()),
    })
}

fn digest(h: HashAlg, data: &[u8]) -> Vec<u8> {
    let mut d = crypto::digest(h);
    d.update(data);
    d.finish()
}

/// The DER `DigestInfo` prefix of PKCS#1 v1.5 signatures.
fn digest_info_prefix(h: HashAlg) -> &'static [u8] {
    match h {
        HashAlg::Sha1 => &[
            0x30, 0x21, 0x30, 0x09, 0x06, 0x05, 0x2b, 0x0e, 0x03, 0x02, 0x1a, 0x05, 0x00, 0x04,
            0x14,
        ],
        HashAlg::Sha224 => &[
            0x30, 0x2d, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02,
            0x04, 0x05, 0x00, 0x04, 0x1c,
        ],
        HashAlg::Sha256 => &[
            0x30, 0x31, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02,
            0x01, 0x05, 0x00, 0x04, 0x20,
        ],
        HashAlg::Sha384 => &[
            0x30, 0x41, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02,
            0x02, 0x05, 0x00, 0x04, 0x30,
        ],
        HashAlg::Sha512 => &[
            0x30, 0x51, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02,
            0x03, 0x05, 0x00, 0x04, 0x40,
        ],
    }
}

/// What the backend is asked to sign for `mech` over `data`: a raw mechanism and its input.
pub fn sign_plan(mech: &Mechanism, data: &[u8]) -> Result<(Mechanism, Vec<u8>)> {
    Ok(match mech {
        Mechanism::Ecdsa(None) | Mechanism::RsaPkcs | Mechanism::Hmac(_) => {
            (mech.clone(), data.to_vec())
        }
        Mechanism::Ecdsa(Some(h)) => (Mechanism::Ecdsa(None), digest(*h, data)),
        Mechanism::RsaPkcsHash(h) => {
            let mut input = digest_info_prefix(*h).to_vec();
            input.extend_from_slice(&digest(*h, data));
            (Mechanism::RsaPkcs, input)
        }
        Mechanism::RsaPss { params, prehashed } => {
            let input = if *prehashed {
                data.to_vec()
            } else {
                digest(params.hash, data)
            };
            let params = PssParams { ..params.clone() };
            (
                Mechanism::RsaPss {
                    params,
                    prehashed: true,
                },
                input,
            )
        }
        m => {
            return Err(Error::mech_invalid(format!(
                "{m:?} cannot sign with a key held by an external instance"
            )))
        }
    })
}

/// A signature or MAC by a backend key.
pub struct RemoteSign {
    pub inner: Arc<Inner>,
    pub uid: Uuid,
    pub mech: Mechanism,
    pub data: Vec<u8>,
    pub len: usize,
}

impl SignOp for RemoteSign {
    fn update(&mut self, data: &[u8]) -> Result<()> {
        self.data.extend_from_slice(data);
        Ok(())
    }
    fn sign_len(&self) -> usize {
        self.len
    }
    fn finish(&mut self) -> Result<Vec<u8>> {
        let (mech, input) = sign_plan(&self.mech, &self.data)?;
        let uid = self.uid;
        self.inner.call("C_Sign", |conn, s| {
            let h = self.inner.key_handle(conn, s, uid)?;
            with_ck(&mech, |ck| s.sign(ck, h, &input))
                .map_err(super::Failure::Ours)?
                .map_err(super::Failure::Backend)
        })
    }
}

/// Verification by a backend key (MACs: the secret stays in the backend).
pub struct RemoteVerify {
    pub inner: Arc<Inner>,
    pub uid: Uuid,
    pub mech: Mechanism,
    pub data: Vec<u8>,
}

impl VerifyOp for RemoteVerify {
    fn update(&mut self, data: &[u8]) -> Result<()> {
        self.data.extend_from_slice(data);
        Ok(())
    }
    fn finish(&mut self, signature: &[u8]) -> Result<()> {
        let (mech, input) = sign_plan(&self.mech, &self.data)?;
        let uid = self.uid;
        self.inner.call("C_Verify", |conn, s| {
            let h = self.inner.key_handle(conn, s, uid)?;
            with_ck(&mech, |ck| s.verify(ck, h, &input, signature))
                .map_err(super::Failure::Ours)?
                .map_err(super::Failure::Backend)
        })
    }
}

/// Encryption or decryption by a backend key. AES ECB and CBC stream: whole blocks are
/// processed as they come (CBC chaining its IV here, so each backend call stands
/// alone), as tools expect of multi-part calls. Other mechanisms give all their output
/// at the end.
pub struct RemoteCipher {
    pub inner: Arc<Inner>,
    pub uid: Uuid,
    pub mech: Mechanism,
    pub encrypt: bool,
    /// Input not processed yet (plaintext when encrypting): wiped when the operation ends.
    pub data: zeroize::Zeroizing<Vec<u8>>,
    /// Output size bound beyond the input (padding, tag) or fixed (RSA).
    pub extra: usize,
    pub fixed: Option<usize>,
}

impl RemoteCipher {
    fn streams(&self) -> bool {
        matches!(
            self.mech,
            Mechanism::AesEcb | Mechanism::AesCbc { .. } | Mechanism::AesCbcPad { .. }
        )
    }

    /// One backend call: all of `input` under `mech`.
    fn call(&self, mech: &Mechanism, input: &[u8]) -> Result<zeroize::Zeroizing<Vec<u8>>> {
        let uid = self.uid;
        let encrypt = self.encrypt;
        let what = if encrypt { "C_Encrypt" } else { "C_Decrypt" };
        let result = self.inner.call(what, |conn, s| {
            let h = self.inner.key_handle(conn, s, uid)?;
            with_ck(mech, |ck| {
                if encrypt {
                    s.encrypt(ck, h, input)
                } else {
                    s.decrypt(ck, h, input)
                }
            })
            .map_err(super::Failure::Ours)?
            .map_err(super::Failure::Backend)
        });
        Ok(zeroize::Zeroizing::new(match result {
            Err(e) if !encrypt && e.rv == CKR_DATA_LEN_RANGE => {
                return Err(Error::new(CKR_ENCRYPTED_DATA_LEN_RANGE, e.msg))
            }
            r => r?,
        }))
    }

    /// The CBC chaining value for the next block (`None`: ECB).
    fn iv(&self) -> Option<[u8; 16]> {
        match &self.mech {
            Mechanism::AesCbc { iv } | Mechanism::AesCbcPad { iv } => Some(*iv),
            _ => None,
        }
    }

    fn set_iv(&mut self, next: &[u8]) {
        if let (Mechanism::AesCbc { iv } | Mechanism::AesCbcPad { iv }, Ok(n)) =
            (&mut self.mech, <[u8; 16]>::try_from(next))
        {
            *iv = n;
        }
    }

    /// How much of `len` pending bytes can be processed now: whole blocks, but
    /// decryption with padding keeps its last block back for the end.
    fn ready(&self, len: usize) -> usize {
        let keep = match (&self.mech, self.encrypt) {
            (Mechanism::AesCbcPad { .. }, false) if len % 16 == 0 => len.min(16),
            _ => len % 16,
        };
        len - keep
    }

    fn len_error(&self) -> Error {
        if self.encrypt {
            Error::new(CKR_DATA_LEN_RANGE, "input is not a whole number of blocks")
        } else {
            Error::new(
                CKR_ENCRYPTED_DATA_LEN_RANGE,
                "ciphertext is not a whole number of blocks",
            )
        }
    }
}

impl CipherOp for RemoteCipher {
    fn update_len(&self, input_len: usize) -> usize {
        if self.streams() {
            self.ready(self.data.len() + input_len)
        } else {
            0
        }
    }
    fn update(&mut self, input: &[u8], out: &mut Vec<u8>) -> Result<()> {
        self.data.extend_from_slice(input);
        if !self.streams() {
            return Ok(());
        }
        let n = self.ready(self.data.len());
        if n == 0 {
            return Ok(());
        }
        let raw = match self.iv() {
            Some(iv) => Mechanism::AesCbc { iv },
            None => Mechanism::AesEcb,
        };
        let chunk = zeroize::Zeroizing::new(self.data[..n].to_vec());
        let r = self.call(&raw, &chunk)?;
        let next = if self.encrypt { &r[..] } else { &chunk[..] };
        let next = next[next.len() - 16..].to_vec();
        self.set_iv(&next);
        self.data.drain(..n);
        out.extend_from_slice(&r);
        Ok(())
    }
    fn final_len(&self) -> usize {
        if self.streams() {
            return self.data.len() + 16;
        }
        self.fixed.unwrap_or(self.data.len() + self.extra)
    }
    fn finish(&mut self, out: &mut Vec<u8>) -> Result<()> {
        if self.streams() {
            match (&self.mech, self.encrypt) {
                (Mechanism::AesCbcPad { .. }, true) => {}
                (Mechanism::AesCbcPad { .. }, false) => {
                    if self.data.len() != 16 {
                        return Err(self.len_error());
                    }
                }
                _ if self.data.is_empty() => return Ok(()),
                _ => return Err(self.len_error()),
            }
        }
        let data = std::mem::take(&mut *self.data);
        let data = zeroize::Zeroizing::new(data);
        let v = self.call(&self.mech.clone(), &data)?;
        out.extend_from_slice(&v);
        Ok(())
    }
}
