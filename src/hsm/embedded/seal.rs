//! Encryption at rest: an instance key (random AES-256) seals key material with
//! AES-256-GCM; the instance key itself is sealed under a key derived from each PIN
//! with Argon2id. Without a PIN the files hold no usable key bytes.

use crate::config::KdfConfig;
use crate::error::{Error, Result};
use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use pkcs11_sys::*;
use rand::RngCore;
use zeroize::Zeroizing;

const NONCE_LEN: usize = 12;

/// The key that seals an instance's key material. Zeroized on drop.
#[derive(Clone)]
pub struct InstanceKey(Zeroizing<[u8; 32]>);

impl InstanceKey {
    pub fn generate() -> InstanceKey {
        let mut k = Zeroizing::new([0u8; 32]);
        rand::rngs::OsRng.fill_bytes(&mut k[..]);
        InstanceKey(k)
    }

    pub fn from_slice(raw: &[u8]) -> Result<InstanceKey> {
        let arr: [u8; 32] = raw
            .try_into()
            .map_err(|_| Error::device("sealed key has the wrong length"))?;
        Ok(InstanceKey(Zeroizing::new(arr)))
    }

    pub fn bytes(&self) -> &[u8] {
        &self.0[..]
    }

    /// As an AES-256 key for the crypto engine (domain-key wrapping).
    pub fn as_material(&self) -> crate::hsm::crypto::KeyMaterial {
        crate::hsm::crypto::KeyMaterial::Secret(Zeroizing::new(self.0.to_vec()))
    }

    pub fn seal(&self, aad: &[u8], plaintext: &[u8]) -> Result<Vec<u8>> {
        seal_with(&self.0, aad, plaintext)
    }

    pub fn unseal(&self, aad: &[u8], sealed: &[u8]) -> Result<Zeroizing<Vec<u8>>> {
        unseal_with(&self.0, aad, sealed)
            .ok_or_else(|| Error::device("sealed key material failed its integrity check"))
    }
}

/// Parameters stored next to a PIN-sealed instance key.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct PinSeal {
    pub salt: [u8; 16],
    pub memory_kib: u32,
    pub iterations: u32,
    pub sealed_key: Vec<u8>,
}

impl PinSeal {
    pub fn new(ik: &InstanceKey, pin: &[u8], kdf: KdfConfig) -> Result<PinSeal> {
        let mut salt = [0u8; 16];
        rand::rngs::OsRng.fill_bytes(&mut salt);
        let kek = derive(pin, &salt, kdf.memory_kib, kdf.iterations)?;
        Ok(PinSeal {
            salt,
            memory_kib: kdf.memory_kib,
            iterations: kdf.iterations,
            sealed_key: seal_with(&kek, b"cks-pin-v1", &ik.0[..])?,
        })
    }

    /// The instance key if `pin` is right; `None` if it is wrong.
    pub fn open(&self, pin: &[u8]) -> Result<Option<InstanceKey>> {
        let kek = derive(pin, &self.salt, self.memory_kib, self.iterations)?;
        Ok(
            unseal_with(&kek, b"cks-pin-v1", &self.sealed_key).and_then(|raw| {
                let arr: [u8; 32] = raw.as_slice().try_into().ok()?;
                Some(InstanceKey(Zeroizing::new(arr)))
            }),
        )
    }
}

fn derive(
    pin: &[u8],
    salt: &[u8],
    memory_kib: u32,
    iterations: u32,
) -> Result<Zeroizing<[u8; 32]>> {
    let params = argon2::Params::new(memory_kib, iterations, 1, Some(32))
        .map_err(|e| Error::new(CKR_GENERAL_ERROR, format!("kdf parameters: {e}")))?;
    let argon = argon2::Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, params);
    let mut out = Zeroizing::new([0u8; 32]);
    argon
        .hash_password_into(pin, salt, &mut out[..])
        .map_err(|e| Error::new(CKR_GENERAL_ERROR, format!("kdf: {e}")))?;
    Ok(out)
}

fn seal_with(key: &[u8; 32], aad: &[u8], plaintext: &[u8]) -> Result<Vec<u8>> {
    let cipher = Aes256Gcm::new(key.into());
    let mut nonce = [0u8; NONCE_LEN];
    rand::rngs::OsRng.fill_bytes(&mut nonce);
    let ct = cipher
        .encrypt(
            Nonce::from_slice(&nonce),
            Payload {
                msg: plaintext,
                aad,
            },
        )
        .map_err(|_| Error::general("seal failed"))?;
    let mut out = Vec::with_capacity(NONCE_LEN + ct.len());
    out.extend_from_slice(&nonce);
    out.extend_from_slice(&ct);
    Ok(out)
}

fn unseal_with(key: &[u8; 32], aad: &[u8], sealed: &[u8]) -> Option<Zeroizing<Vec<u8>>> {
    if sealed.len() < NONCE_LEN + 16 {
        return None;
    }
    let (nonce, ct) = sealed.split_at(NONCE_LEN);
    let cipher = Aes256Gcm::new(key.into());
    cipher
        .decrypt(Nonce::from_slice(nonce), Payload { msg: ct, aad })
        .ok()
        .map(Zeroizing::new)
}

#[cfg(test)]
mod tests {
    use super::*;

    const CHEAP: KdfConfig = KdfConfig {
        memory_kib: 64,
        iterations: 1,
    };

    #[test]
    fn pin_seal_opens_only_with_the_pin() {
        let ik = InstanceKey::generate();
        let seal = PinSeal::new(&ik, b"1234", CHEAP).unwrap();
        let opened = seal.open(b"1234").unwrap().unwrap();
        assert_eq!(&opened.0[..], &ik.0[..]);
        assert!(seal.open(b"1235").unwrap().is_none());
    }

    #[test]
    fn sealed_material_is_bound_to_its_aad_and_hides_the_bytes() {
        let ik = InstanceKey::generate();
        let secret = [0x5au8; 32];
        let blob = ik.seal(b"obj-1", &secret).unwrap();
        assert!(!blob.windows(8).any(|w| w == &secret[..8]));
        assert_eq!(&ik.unseal(b"obj-1", &blob).unwrap()[..], &secret[..]);
        assert!(ik.unseal(b"obj-2", &blob).is_err());
        let mut tampered = blob.clone();
        tampered[20] ^= 1;
        assert!(ik.unseal(b"obj-1", &tampered).is_err());
    }
}
