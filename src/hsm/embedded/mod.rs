//! The embedded HSM instance: software cryptography (see `hsm::crypto`) over a durable,
//! encrypted store in its own directory.

pub mod seal;
pub mod store;

use crate::config::KdfConfig;
use crate::error::{Error, Result};
use crate::hsm::crypto::{self, CipherOp, KeyMaterial, SignOp, VerifyOp};
use crate::hsm::mechanism::Mechanism;
use parking_lot::RwLock;
use pkcs11_sys::*;
use seal::{InstanceKey, PinSeal};
use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use store::Store;
pub use store::{PinUser, StoredObject, TokenRecord};
use uuid::Uuid;

/// What the token needs to know about a PIN for `CK_TOKEN_INFO` flags.
#[derive(Clone, Copy, Debug, Default)]
pub struct PinStatus {
    pub initialized: bool,
    pub failures: u32,
    pub locked: bool,
}

pub struct EmbeddedInstance {
    id: String,
    store: Store,
    kdf: KdfConfig,
    max_attempts: u32,
    /// Present while someone is logged in: seals and unseals key material.
    instance_key: RwLock<Option<InstanceKey>>,
    /// Key material in use, token and session keys alike.
    materials: RwLock<HashMap<Uuid, Arc<KeyMaterial>>>,
}

impl EmbeddedInstance {
    pub fn open(id: &str, dir: &Path, kdf: KdfConfig, max_attempts: u32) -> Result<Self> {
        Ok(EmbeddedInstance {
            id: id.to_string(),
            store: Store::open(dir)?,
            kdf,
            max_attempts,
            instance_key: RwLock::new(None),
            materials: RwLock::new(HashMap::new()),
        })
    }

    pub fn id(&self) -> &str {
        &self.id
    }

    pub fn store_path(&self) -> &Path {
        self.store.path()
    }

    pub fn token_record(&self) -> Result<Option<TokenRecord>> {
        self.store.token()
    }

    pub fn pin_status(&self, user: PinUser) -> Result<PinStatus> {
        Ok(match self.store.pin(user)? {
            None => PinStatus::default(),
            Some(rec) => PinStatus {
                initialized: true,
                failures: rec.failures,
                locked: rec.failures >= self.max_attempts,
            },
        })
    }

    pub fn max_attempts(&self) -> u32 {
        self.max_attempts
    }

    /// `C_InitToken`: a token already initialised needs its SO PIN.
    pub fn init_token(&self, so_pin: &[u8], label: &str) -> Result<()> {
        if self.store.token()?.is_some() {
            self.check_pin(PinUser::So, so_pin)?;
        }
        let ik = InstanceKey::generate();
        let seal = PinSeal::new(&ik, so_pin, self.kdf)?;
        let mut serial = [0u8; 8];
        crypto::random_bytes(&mut serial);
        self.store.init_token(label, &hex::encode(serial), &seal)?;
        self.materials.write().clear();
        *self.instance_key.write() = None;
        Ok(())
    }

    /// Verify a PIN, counting failures across processes; returns the instance key.
    fn check_pin(&self, user: PinUser, pin: &[u8]) -> Result<InstanceKey> {
        let rec = self.store.pin(user)?.ok_or_else(|| match user {
            PinUser::User => Error::new(CKR_USER_PIN_NOT_INITIALIZED, "user PIN not initialised"),
            PinUser::So => Error::new(CKR_TOKEN_NOT_RECOGNIZED, "token not initialised"),
        })?;
        if rec.failures >= self.max_attempts {
            return Err(Error::new(
                CKR_PIN_LOCKED,
                "PIN locked after too many wrong attempts",
            ));
        }
        match rec.seal.open(pin)? {
            Some(ik) => {
                if rec.failures != 0 {
                    self.store.reset_failures(user)?;
                }
                Ok(ik)
            }
            None => {
                let n = self.store.record_failure(user)?;
                if n >= self.max_attempts {
                    Err(Error::new(CKR_PIN_LOCKED, "wrong PIN; PIN now locked"))
                } else {
                    Err(Error::new(
                        CKR_PIN_INCORRECT,
                        format!("wrong PIN ({n} in a row)"),
                    ))
                }
            }
        }
    }

    pub fn login(&self, user: PinUser, pin: &[u8]) -> Result<()> {
        let ik = self.check_pin(user, pin)?;
        *self.instance_key.write() = Some(ik);
        Ok(())
    }

    /// Forget the instance key and every token key's material; session keys stay
    /// (the token destroys the private ones).
    pub fn logout(&self, token_uids: impl Iterator<Item = Uuid>) {
        *self.instance_key.write() = None;
        let mut m = self.materials.write();
        for uid in token_uids {
            m.remove(&uid);
        }
    }

    /// `C_InitPIN`, called with the SO logged in.
    pub fn init_user_pin(&self, pin: &[u8]) -> Result<()> {
        let ik = self.current_key()?;
        self.store
            .set_pin(PinUser::User, &PinSeal::new(&ik, pin, self.kdf)?)
    }

    /// `C_SetPIN`: re-seal the instance key under the new PIN.
    pub fn set_pin(&self, user: PinUser, old: &[u8], new: &[u8]) -> Result<()> {
        let ik = self.check_pin(user, old)?;
        self.store.set_pin(user, &PinSeal::new(&ik, new, self.kdf)?)
    }

    fn current_key(&self) -> Result<InstanceKey> {
        self.instance_key
            .read()
            .clone()
            .ok_or_else(|| Error::new(CKR_USER_NOT_LOGGED_IN, "instance is locked: log in first"))
    }

    pub fn data_version(&self) -> Result<i64> {
        self.store.data_version()
    }

    pub fn load_objects(&self) -> Result<Vec<StoredObject>> {
        self.store.load_objects()
    }

    /// Keep a new object. Token objects are written durably; secret material is sealed.
    pub fn put_object(
        &self,
        uid: Uuid,
        attrs: Vec<u8>,
        material: Option<KeyMaterial>,
        persistent: bool,
    ) -> Result<()> {
        if persistent {
            let (blob, sealed) = match &material {
                None => (None, false),
                Some(m) if m.is_private() || matches!(m, KeyMaterial::Secret(_)) => {
                    let ik = self.current_key()?;
                    (Some(ik.seal(uid.as_bytes(), &m.encode()?)?), true)
                }
                Some(m) => (Some(m.encode()?.to_vec()), false),
            };
            self.store.insert_object(&StoredObject {
                uid,
                attrs,
                material: blob,
                sealed,
            })?;
        }
        if let Some(m) = material {
            self.materials.write().insert(uid, Arc::new(m));
        }
        Ok(())
    }

    pub fn update_attrs(&self, uid: Uuid, attrs: &[u8]) -> Result<()> {
        if !self.store.update_attrs(uid, attrs)? {
            return Err(Error::new(
                CKR_OBJECT_HANDLE_INVALID,
                "object no longer exists",
            ));
        }
        Ok(())
    }

    pub fn destroy(&self, uid: Uuid, persistent: bool) -> Result<()> {
        if persistent {
            self.store.delete_object(uid)?;
        }
        self.materials.write().remove(&uid);
        Ok(())
    }

    /// The material of a key, unsealed on first use.
    pub fn material(&self, uid: Uuid) -> Result<Arc<KeyMaterial>> {
        if let Some(m) = self.materials.read().get(&uid) {
            return Ok(m.clone());
        }
        let obj = self
            .store
            .load_objects()?
            .into_iter()
            .find(|o| o.uid == uid)
            .ok_or_else(|| Error::new(CKR_KEY_HANDLE_INVALID, "key no longer exists"))?;
        let blob = obj
            .material
            .ok_or_else(|| Error::new(CKR_KEY_TYPE_INCONSISTENT, "object has no key material"))?;
        let m = if obj.sealed {
            let ik = self.current_key()?;
            KeyMaterial::decode(&ik.unseal(uid.as_bytes(), &blob)?)?
        } else {
            KeyMaterial::decode(&blob)?
        };
        let m = Arc::new(m);
        self.materials.write().insert(uid, m.clone());
        Ok(m)
    }

    pub fn cipher(&self, uid: Uuid, mech: &Mechanism, encrypt: bool) -> Result<Box<dyn CipherOp>> {
        let key = self.material(uid)?;
        if encrypt {
            crypto::encrypt(mech, &key)
        } else {
            crypto::decrypt(mech, &key)
        }
    }

    pub fn signer(&self, uid: Uuid, mech: &Mechanism) -> Result<Box<dyn SignOp>> {
        crypto::sign(mech, &*self.material(uid)?)
    }

    pub fn verifier(&self, uid: Uuid, mech: &Mechanism) -> Result<Box<dyn VerifyOp>> {
        crypto::verify(mech, &*self.material(uid)?)
    }

    /// Wrap the key `target` under `wrapping`: its raw value (secret keys) or
    /// PKCS#8 (private keys). The caller has checked that `target` may be wrapped.
    pub fn wrap(&self, mech: &Mechanism, wrapping: Uuid, target: Uuid) -> Result<Vec<u8>> {
        let wk = self.material(wrapping)?;
        let tk = self.material(target)?;
        let payload = match &*tk {
            KeyMaterial::Secret(v) => zeroize::Zeroizing::new(v.to_vec()),
            m if m.is_private() => m.private_to_pkcs8()?,
            _ => {
                return Err(Error::new(
                    CKR_KEY_NOT_WRAPPABLE,
                    "only secret and private keys wrap",
                ))
            }
        };
        crypto::wrap(mech, &wk, &payload)
    }

    /// Unwrap a secret key's value (`private == false`) or a private key's PKCS#8.
    pub fn unwrap(
        &self,
        mech: &Mechanism,
        unwrapping: Uuid,
        wrapped: &[u8],
        private: bool,
    ) -> Result<KeyMaterial> {
        let plain = crypto::unwrap(mech, &*self.material(unwrapping)?, wrapped)?;
        if private {
            KeyMaterial::private_from_pkcs8(&plain)
        } else {
            Ok(KeyMaterial::Secret(plain))
        }
    }
}
