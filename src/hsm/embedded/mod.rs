//! The embedded HSM instance: software cryptography (see `hsm::crypto`) over a durable,
//! encrypted store in its own directory. Its instance key seals every secret it holds;
//! the instance key itself is sealed under the key store's key, so the files reveal no
//! key bytes without the PIN. The cluster's domain key, sealed the same way, is the
//! one way key material leaves the instance (wrapped, AES key wrap with padding).

pub mod seal;
pub mod store;

use crate::error::{Error, Result};
use crate::hsm::crypto::fast::{self, FastKey};
use crate::hsm::crypto::{self, CipherOp, KeyMaterial, SignOp, VerifyOp};
use crate::hsm::mechanism::{EcKdf, Mechanism};
use crate::hsm::{AttrsOf, Instance, KeySpec};
use crate::read_mostly::ReadMostly;
use parking_lot::RwLock;
use pkcs11_sys::*;
use seal::InstanceKey;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use store::Store;
pub use store::{PinUser, StoredObject, TokenRecord};
use uuid::Uuid;
use zeroize::Zeroizing;

/// What the token needs to know about a PIN for `CK_TOKEN_INFO` flags.
#[derive(Clone, Copy, Debug, Default)]
pub struct PinStatus {
    pub initialized: bool,
    pub failures: u32,
    pub locked: bool,
}

const META_INSTANCE_KEY: &str = "instance_key";
const META_DOMAIN_KEY: &str = "domain_key";

/// Unlocked secrets of an instance.
struct Keys {
    instance: InstanceKey,
    domain: InstanceKey,
}

pub struct EmbeddedInstance {
    id: String,
    dir: PathBuf,
    store: Store,
    /// Test hook (configuration `fault_file`): while this file exists, the instance
    /// behaves as a failed device.
    fault_file: Option<PathBuf>,
    keys: RwLock<Option<Keys>>,
    /// Key material in use, token and session keys alike.
    materials: ReadMostly<HashMap<Uuid, Arc<KeyMaterial>, rustc_hash::FxBuildHasher>>,
    /// Asymmetric keys parsed once for the fast engine (`None`: it does not take them).
    fast: ReadMostly<HashMap<Uuid, Option<Arc<FastKey>>, rustc_hash::FxBuildHasher>>,
}

fn aad(what: &str, id: &str) -> Vec<u8> {
    format!("cks/{what}/{id}").into_bytes()
}

impl EmbeddedInstance {
    pub fn open(id: &str, dir: &Path, fault_file: Option<PathBuf>) -> Result<Self> {
        Ok(EmbeddedInstance {
            id: id.to_string(),
            dir: dir.to_path_buf(),
            store: Store::open(dir, "instance.db")?,
            fault_file,
            keys: RwLock::new(None),
            materials: ReadMostly::default(),
            fast: ReadMostly::default(),
        })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn check_fault(&self) -> Result<()> {
        if let Some(f) = &self.fault_file {
            if f.exists() {
                return Err(Error::device(format!(
                    "instance {} failed (fault injected)",
                    self.id
                )));
            }
        }
        Ok(())
    }

    fn with_keys<T>(&self, f: impl FnOnce(&Keys) -> Result<T>) -> Result<T> {
        let keys = self.keys.read();
        f(keys.as_ref().ok_or_else(locked)?)
    }

    fn fast_key(&self, uid: Uuid, m: &KeyMaterial) -> Option<Arc<FastKey>> {
        if matches!(m, KeyMaterial::Secret(_)) {
            return None; // symmetric keys stay with RustCrypto
        }
        if let Some(k) = self.fast.read().get(&uid) {
            return k.clone();
        }
        let k = FastKey::prepare(m).map(Arc::new);
        self.fast.write().insert(uid, k.clone());
        k
    }
}

impl Instance for EmbeddedInstance {
    fn kind(&self) -> &'static str {
        "embedded"
    }

    fn id(&self) -> &str {
        &self.id
    }

    fn probe(&self) -> Result<()> {
        self.check_fault()?;
        if !self.store.path().exists() {
            return Err(Error::device(format!(
                "instance {}: {} is gone",
                self.id,
                self.store.path().display()
            )));
        }
        self.store.data_version()?;
        Ok(())
    }

    fn is_initialized(&self) -> Result<bool> {
        Ok(self.store.meta(META_INSTANCE_KEY)?.is_some())
    }

    fn initialize(&self, keystore_key: &InstanceKey, domain_key: &[u8]) -> Result<()> {
        self.check_fault()?;
        let ik = InstanceKey::generate();
        let sealed_ik = keystore_key.seal(&aad("instance-key", &self.id), ik.bytes())?;
        let sealed_dk = ik.seal(&aad("domain-key", &self.id), domain_key)?;
        self.store.reset(&[
            (META_INSTANCE_KEY, &sealed_ik),
            (META_DOMAIN_KEY, &sealed_dk),
        ])?;
        self.materials.write().clear();
        let domain = InstanceKey::from_slice(domain_key)?;
        *self.keys.write() = Some(Keys {
            instance: ik,
            domain,
        });
        Ok(())
    }

    fn unlock(&self, keystore_key: &InstanceKey) -> Result<()> {
        self.check_fault()?;
        let sealed_ik = self
            .store
            .meta(META_INSTANCE_KEY)?
            .ok_or_else(|| Error::device(format!("instance {} is not initialised", self.id)))?;
        let ik = InstanceKey::from_slice(
            &keystore_key.unseal(&aad("instance-key", &self.id), &sealed_ik)?,
        )?;
        let sealed_dk = self
            .store
            .meta(META_DOMAIN_KEY)?
            .ok_or_else(|| Error::device(format!("instance {} has no domain key", self.id)))?;
        let domain =
            InstanceKey::from_slice(&ik.unseal(&aad("domain-key", &self.id), &sealed_dk)?)?;
        *self.keys.write() = Some(Keys {
            instance: ik,
            domain,
        });
        Ok(())
    }

    fn is_unlocked(&self) -> bool {
        self.keys.read().is_some()
    }

    fn domain_key(&self) -> Result<Zeroizing<Vec<u8>>> {
        let keys = self.keys.read();
        let k = keys.as_ref().ok_or_else(locked)?;
        Ok(Zeroizing::new(k.domain.bytes().to_vec()))
    }

    fn lock(&self, token_uids: &[Uuid]) {
        *self.keys.write() = None;
        let mut m = self.materials.write();
        let mut f = self.fast.write();
        for uid in token_uids {
            m.remove(uid);
            f.remove(uid);
        }
    }

    fn data_version(&self) -> Result<i64> {
        self.check_fault()?;
        self.store.data_version()
    }

    fn load_objects(&self) -> Result<Vec<StoredObject>> {
        self.check_fault()?;
        self.store.load_objects()
    }

    fn load_attrs(&self) -> Result<Vec<(Uuid, Vec<u8>)>> {
        self.check_fault()?;
        self.store.load_attrs()
    }

    fn load_attrs_of(&self, uids: &[Uuid]) -> Result<Vec<(Uuid, Vec<u8>)>> {
        self.check_fault()?;
        self.store.load_attrs_of(uids)
    }

    fn cmk_generations(&self) -> Result<Vec<(Uuid, u64)>> {
        self.check_fault()?;
        self.store.cmk_generations()
    }

    fn load_cmks_of(&self, ids: &[Uuid]) -> Result<Vec<(Uuid, u64, Vec<u8>)>> {
        self.check_fault()?;
        self.store.load_cmks_of(ids)
    }

    fn put_cmk(&self, id: Uuid, generation: u64, meta: &[u8]) -> Result<bool> {
        self.check_fault()?;
        self.store.put_cmk(id, generation, meta)
    }

    fn load_cmks(&self) -> Result<Vec<(Uuid, u64, Vec<u8>)>> {
        self.check_fault()?;
        self.store.load_cmks()
    }

    fn delete_cmk(&self, id: Uuid) -> Result<()> {
        self.check_fault()?;
        self.store.delete_cmk(id)
    }

    fn has_object(&self, uid: Uuid) -> Result<bool> {
        self.check_fault()?;
        Ok(self.store.object(uid)?.is_some())
    }

    fn key_count(&self) -> Result<usize> {
        self.check_fault()?;
        self.store.sealed_count()
    }

    fn object_ids(&self) -> Result<Vec<Uuid>> {
        self.check_fault()?;
        self.store.object_ids()
    }

    fn put_object(
        &self,
        uid: Uuid,
        attrs: Vec<u8>,
        material: Option<KeyMaterial>,
        persistent: bool,
    ) -> Result<()> {
        self.check_fault()?;
        if persistent {
            let (blob, sealed) = match &material {
                None => (None, false),
                Some(m) if m.is_private() || matches!(m, KeyMaterial::Secret(_)) => {
                    let blob = self.with_keys(|k| k.instance.seal(uid.as_bytes(), &m.encode()?))?;
                    (Some(blob), true)
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

    fn export(&self, uid: Uuid) -> Result<StoredObject> {
        self.check_fault()?;
        let obj = self
            .store
            .object(uid)?
            .ok_or_else(|| Error::new(CKR_OBJECT_HANDLE_INVALID, "object not on this instance"))?;
        let material = match (&obj.material, obj.sealed) {
            (Some(_), true) => {
                let payload = crate::hsm::wire_payload(&*self.material(uid)?)?;
                let wrapped = self.with_keys(|k| {
                    crypto::wrap(
                        &Mechanism::AesKeyWrapPad { iv: None },
                        &k.domain.as_material(),
                        &payload,
                    )
                })?;
                Some(wrapped)
            }
            (m, _) => m.clone(),
        };
        Ok(StoredObject {
            uid,
            attrs: obj.attrs,
            material,
            sealed: obj.sealed,
        })
    }

    /// Take in an object exported by another member (`sealed` material is domain-wrapped).
    fn import(&self, obj: StoredObject) -> Result<()> {
        self.check_fault()?;
        let material = match (&obj.material, obj.sealed) {
            (Some(w), true) => {
                let plain = self.with_keys(|k| {
                    crypto::unwrap(
                        &Mechanism::AesKeyWrapPad { iv: None },
                        &k.domain.as_material(),
                        w,
                    )
                })?;
                Some(crate::hsm::from_wire_payload(&obj.attrs, plain)?)
            }
            (Some(p), false) => Some(KeyMaterial::decode(p)?),
            (None, _) => None,
        };
        if self.store.object(obj.uid)?.is_some() {
            self.store.delete_object(obj.uid)?;
        }
        self.put_object(obj.uid, obj.attrs, material, true)
    }

    fn export_plain(&self, uid: Uuid) -> Result<(StoredObject, Arc<KeyMaterial>)> {
        self.check_fault()?;
        let obj = self
            .store
            .object(uid)?
            .ok_or_else(|| Error::new(CKR_OBJECT_HANDLE_INVALID, "object not on this instance"))?;
        let material = self.material(uid)?;
        Ok((
            StoredObject {
                material: None,
                ..obj
            },
            material,
        ))
    }

    fn generate(&self, uid: Uuid, spec: &KeySpec, attrs: AttrsOf) -> Result<Option<KeyMaterial>> {
        self.check_fault()?;
        let (material, public) = spec.generate()?;
        let attrs = attrs(public.as_ref())?;
        self.put_object(uid, attrs, Some(material), true)?;
        Ok(public)
    }

    fn ecdh_derive(
        &self,
        base: Uuid,
        kdf: EcKdf,
        shared_data: &[u8],
        public_data: &[u8],
        len: usize,
    ) -> Result<Zeroizing<Vec<u8>>> {
        crypto::ecdh_derive(&*self.material(base)?, kdf, shared_data, public_data, len)
    }

    fn update_attrs(&self, uid: Uuid, attrs: &[u8]) -> Result<()> {
        self.check_fault()?;
        if !self.store.update_attrs(uid, attrs)? {
            return Err(Error::new(
                CKR_OBJECT_HANDLE_INVALID,
                "object no longer exists",
            ));
        }
        Ok(())
    }

    fn destroy(&self, uid: Uuid, persistent: bool) -> Result<()> {
        if persistent {
            self.check_fault()?;
            self.store.delete_object(uid)?;
        }
        self.materials.write().remove(&uid);
        self.fast.write().remove(&uid);
        Ok(())
    }

    fn put_session_material(&self, uid: Uuid, m: Arc<KeyMaterial>) {
        self.materials.write().insert(uid, m);
    }

    fn material(&self, uid: Uuid) -> Result<Arc<KeyMaterial>> {
        self.check_fault()?;
        if let Some(m) = self.materials.read().get(&uid) {
            return Ok(m.clone());
        }
        let obj = self
            .store
            .object(uid)?
            .ok_or_else(|| Error::new(CKR_KEY_HANDLE_INVALID, "key is not on this instance"))?;
        let blob = obj
            .material
            .ok_or_else(|| Error::new(CKR_KEY_TYPE_INCONSISTENT, "object has no key material"))?;
        let m = if obj.sealed {
            KeyMaterial::decode(&self.with_keys(|k| k.instance.unseal(uid.as_bytes(), &blob))?)?
        } else {
            KeyMaterial::decode(&blob)?
        };
        let m = Arc::new(m);
        self.materials.write().insert(uid, m.clone());
        Ok(m)
    }

    fn cipher(&self, uid: Uuid, mech: &Mechanism, encrypt: bool) -> Result<Box<dyn CipherOp>> {
        let key = self.material(uid)?;
        if !encrypt && key.is_private() {
            if let Some(op) = self
                .fast_key(uid, &key)
                .and_then(|fk| fast::decrypter(mech, &fk))
            {
                return Ok(op);
            }
        }
        if encrypt {
            crypto::encrypt(mech, &key)
        } else {
            crypto::decrypt(mech, &key)
        }
    }

    fn signer(&self, uid: Uuid, mech: &Mechanism) -> Result<Box<dyn SignOp>> {
        let key = self.material(uid)?;
        if let Some(fk) = self.fast_key(uid, &key) {
            if let Some(op) = fast::signer(mech, &fk, &key)? {
                return Ok(op);
            }
        }
        crypto::sign(mech, &key)
    }

    fn verifier(&self, uid: Uuid, mech: &Mechanism) -> Result<Box<dyn VerifyOp>> {
        let key = self.material(uid)?;
        if let Some(fk) = self.fast_key(uid, &key) {
            if let Some(op) = fast::verifier(mech, &fk, &key)? {
                return Ok(op);
            }
        }
        crypto::verify(mech, &key)
    }

    fn wrap(&self, mech: &Mechanism, wrapping: Uuid, target: Uuid) -> Result<Vec<u8>> {
        let wk = self.material(wrapping)?;
        let tk = self.material(target)?;
        let payload = match &*tk {
            KeyMaterial::Secret(v) => Zeroizing::new(v.to_vec()),
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

    fn unwrap(
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

fn locked() -> Error {
    Error::new(CKR_USER_NOT_LOGGED_IN, "instance is locked: log in first")
}
