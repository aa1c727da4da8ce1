//! KMS-style envelope encryption (`CKM_CKS_ENVELOPE`, include/cks_pkcs11.h): AES-GCM
//! under the key's current version, with a header naming the key and the version, so
//! that decryption after a rotation needs no bookkeeping by the caller.
//!
//! Ciphertext: `"CKS1"` ‖ version (u32, big-endian) ‖ key id (16 bytes) ‖ IV (12 bytes)
//! ‖ AES-GCM ciphertext ‖ tag (16 bytes). The header and the caller's AAD (the
//! mechanism parameter) are authenticated.

use super::lifecycle::Use;
use super::Cmk;
use crate::error::{Error, Result};
use crate::hsm::crypto::{self, CipherOp};
use crate::hsm::mechanism::Mechanism;
use crate::keystore::KeyStore;
use pkcs11_sys::*;
use std::sync::Arc;
use uuid::Uuid;

const MAGIC: &[u8; 4] = b"CKS1";
const HEADER_LEN: usize = 4 + 4 + 16 + 12;
const TAG_LEN: usize = 16;

fn gcm(iv: &[u8], header: &[u8], aad: &[u8]) -> Mechanism {
    let mut all = header.to_vec();
    all.extend_from_slice(aad);
    Mechanism::AesGcm {
        iv: iv.to_vec(),
        aad: all,
        tag_bits: 128,
    }
}

/// Encryption under the current version; returns the operation and the version used.
pub fn encrypter(ks: &KeyStore, cmk: &Cmk, aad: &[u8]) -> Result<(Box<dyn CipherOp>, u32, Uuid)> {
    let v = cmk
        .latest()
        .ok_or_else(|| Error::general("key has no version"))?;
    let mut iv = [0u8; 12];
    crypto::random_bytes(&mut iv);
    let mut header = Vec::with_capacity(HEADER_LEN);
    header.extend_from_slice(MAGIC);
    header.extend_from_slice(&v.version.to_be_bytes());
    header.extend_from_slice(cmk.id.as_bytes());
    header.extend_from_slice(&iv);
    let mech = gcm(&iv, &header, aad);
    let object = v.object;
    let (inner, _) = ks.cluster.cipher(object, &mech, true)?;
    Ok((Box::new(Seal { header, inner }), v.version, object))
}

struct Seal {
    header: Vec<u8>,
    inner: Box<dyn CipherOp>,
}

impl CipherOp for Seal {
    fn update_len(&self, input_len: usize) -> usize {
        self.inner.update_len(input_len)
    }
    fn update(&mut self, input: &[u8], out: &mut Vec<u8>) -> Result<()> {
        self.inner.update(input, out)
    }
    fn final_len(&self) -> usize {
        self.header.len() + self.inner.final_len()
    }
    fn finish(&mut self, out: &mut Vec<u8>) -> Result<()> {
        let mut body = Vec::with_capacity(self.inner.final_len());
        self.inner.finish(&mut body)?;
        out.extend_from_slice(&self.header);
        out.extend_from_slice(&body);
        Ok(())
    }
}

/// Decryption: the version is read from the ciphertext when it is complete.
pub fn decrypter(ks: Arc<KeyStore>, cmk: Cmk, aad: &[u8]) -> Box<dyn CipherOp> {
    Box::new(Open {
        ks,
        cmk,
        aad: aad.to_vec(),
        buf: Vec::new(),
    })
}

struct Open {
    ks: Arc<KeyStore>,
    cmk: Cmk,
    aad: Vec<u8>,
    buf: Vec<u8>,
}

impl CipherOp for Open {
    fn update_len(&self, _input_len: usize) -> usize {
        0
    }
    fn update(&mut self, input: &[u8], _out: &mut Vec<u8>) -> Result<()> {
        self.buf.extend_from_slice(input);
        Ok(())
    }
    fn final_len(&self) -> usize {
        self.buf.len().saturating_sub(HEADER_LEN + TAG_LEN)
    }
    fn finish(&mut self, out: &mut Vec<u8>) -> Result<()> {
        let invalid = |why: &str| Error::new(CKR_ENCRYPTED_DATA_INVALID, why.to_string());
        if self.buf.len() < HEADER_LEN + TAG_LEN {
            return Err(Error::new(
                CKR_ENCRYPTED_DATA_LEN_RANGE,
                "too short for an envelope",
            ));
        }
        let (header, body) = self.buf.split_at(HEADER_LEN);
        if &header[..4] != MAGIC {
            return Err(invalid("not a cks envelope"));
        }
        let version = u32::from_be_bytes([header[4], header[5], header[6], header[7]]);
        if &header[8..24] != self.cmk.id.as_bytes() {
            return Err(invalid("the envelope was made with another key"));
        }
        let object = self
            .cmk
            .versions
            .iter()
            .find(|v| v.version == version)
            .map(|v| v.object)
            .ok_or_else(|| invalid("the envelope names a version this key does not have"))?;
        self.ks.check_use(object, Use::Unprotect)?;
        let mech = gcm(&header[24..], header, &self.aad);
        let (mut op, _) = self.ks.cluster.cipher(object, &mech, false)?;
        op.update(body, out)?;
        op.finish(out)
    }
}
