//! An instance that is any PKCS#11 module: a vendor HSM's client library, SoftHSM2, or
//! p11-kit's client module reaching a `p11-kit server` on another machine.
//!
//! What the backend holds:
//! - `cks-domain-key`: the cluster's domain key, `CKA_TRUSTED` (set by the token's SO
//!   when the instance joins), wrap/unwrap only, never extractable;
//! - `cks:<uuid>`: each token secret or private key, generated inside the backend,
//!   sensitive and extractable only under a trusted key (`CKA_WRAP_WITH_TRUSTED`): the
//!   domain key is the one way it leaves, to another member;
//! - data objects (`CKA_APPLICATION` "cks"): each object's attributes and public
//!   material (`cks-object:<uuid>`), each CMK record (`cks-cmk:<uuid>`), and a change
//!   counter (`cks-version`), so that another host using the same HSMs sees the same keys.
//!
//! Session keys and public keys are used in this process, as on the embedded instance.

mod conn;
mod ops;

use crate::config::HsmConfig;
use crate::error::{Error, Result};
use crate::hsm::crypto::{self, CipherOp, KeyMaterial, SignOp, VerifyOp};
use crate::hsm::embedded::seal::InstanceKey;
use crate::hsm::mechanism::{Curve, EcKdf, HashAlg, Mechanism};
use crate::hsm::{AttrsOf, Instance, KeySpec, StoredObject};
use crate::token::attribute::Attributes;
use arc_swap::ArcSwapOption;
use conn::{backend_error, sessions_vanished, Conn, PinSource, TokenRef};
use cryptoki::error::Error as CkError;
use cryptoki::mechanism::elliptic_curve::{EcKdf as CkKdf, Ecdh1DeriveParams};
use cryptoki::mechanism::Mechanism as Ck;
use cryptoki::object::{Attribute, AttributeType, KeyType, ObjectClass, ObjectHandle};
use cryptoki::session::Session;
use parking_lot::{Mutex, RwLock};
use pkcs11_sys::*;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use uuid::Uuid;
use zeroize::{Zeroize, Zeroizing};

const APPLICATION: &[u8] = b"cks";
const DOMAIN_KEY_LABEL: &str = "cks-domain-key";
const VERSION_LABEL: &str = "cks-version";
const OBJECT_PREFIX: &str = "cks-object:";
const CMK_PREFIX: &str = "cks-cmk:";
const KEY_PREFIX: &str = "cks:";

/// How keys cross between members: AES key wrap with padding under the domain key.
const DOMAIN_WRAP: Mechanism = Mechanism::AesKeyWrapPad { iv: None };

/// How long a read of the backend's change counter is trusted (changes made by this
/// process are seen at once; those of another host within this time).
const VERSION_TTL: Duration = Duration::from_millis(250);

/// An object as kept in its data object.
#[derive(Serialize, Deserialize)]
struct Record {
    attrs: Vec<u8>,
    /// Material that is not secret (public keys), encoded.
    public: Option<Vec<u8>>,
    /// A secret or private key lives in the backend as `cks:<uuid>`.
    sealed: bool,
}

/// Why a backend call failed: the backend said so, or we did.
pub(crate) enum Failure {
    Backend(CkError),
    Ours(Error),
}

impl From<CkError> for Failure {
    fn from(e: CkError) -> Self {
        Failure::Backend(e)
    }
}

pub struct Pkcs11Instance {
    inner: Arc<Inner>,
}

pub(crate) struct Inner {
    id: String,
    module: PathBuf,
    token: TokenRef,
    pin: PinSource,
    so_pin: Option<PinSource>,
    fault_file: Option<PathBuf>,
    accept_plaintext_keys: bool,
    conn: ArcSwapOption<Conn>,
    connecting: Mutex<()>,
    unlocked: AtomicBool,
    /// Session keys and public keys, used in this process.
    materials: RwLock<HashMap<Uuid, Arc<KeyMaterial>>>,
    /// Keys held by the backend, as far as this process has used them.
    backend_keys: RwLock<HashMap<Uuid, Arc<KeyFacts>>>,
    version: Mutex<Option<(Instant, i64)>>,
}

impl Pkcs11Instance {
    /// Load the module, find the token and log in; an error names the instance and
    /// what is wrong.
    pub fn open(h: &HsmConfig) -> Result<Pkcs11Instance> {
        let missing = |what: &str| Error::general(format!("instance {}: no {what}", h.id));
        let token = match (&h.token_label, &h.token_serial) {
            (Some(l), _) => TokenRef::Label(l.clone()),
            (None, Some(s)) => TokenRef::Serial(s.clone()),
            _ => return Err(missing("token_label or token_serial")),
        };
        let pin = match (&h.pin_env, &h.pin_file) {
            (Some(v), _) => PinSource::Env(v.clone()),
            (None, Some(f)) => PinSource::File(f.clone()),
            _ => return Err(missing("pin_env or pin_file")),
        };
        let so_pin = match (&h.so_pin_env, &h.so_pin_file) {
            (Some(v), _) => Some(PinSource::Env(v.clone())),
            (None, Some(f)) => Some(PinSource::File(f.clone())),
            _ => None,
        };
        let inner = Arc::new(Inner {
            id: h.id.clone(),
            module: h.module.clone().ok_or_else(|| missing("module"))?,
            token,
            pin,
            so_pin,
            fault_file: h.fault_file.clone(),
            accept_plaintext_keys: h.accept_plaintext_keys.unwrap_or(false),
            conn: ArcSwapOption::empty(),
            connecting: Mutex::new(()),
            unlocked: AtomicBool::new(false),
            materials: RwLock::new(HashMap::new()),
            backend_keys: RwLock::new(HashMap::new()),
            version: Mutex::new(None),
        });
        conn::register_user(&inner.module, &inner.id);
        // `true`: a module loaded before (its far end was down then) is initialised
        // again, so that it connects anew.
        inner.connection(true)?;
        Ok(Pkcs11Instance { inner })
    }
}

impl Inner {
    fn check_fault(&self) -> Result<()> {
        if self.fault_file.as_ref().is_some_and(|f| f.exists()) {
            return Err(Error::device(format!(
                "instance {} failed (fault injected)",
                self.id
            )));
        }
        Ok(())
    }

    /// The live connection, made if there is none; `again`: the last one failed, make a
    /// new one. A connection that cannot be made is tried once more with the module
    /// initialised again (p11-kit's client reconnects to a restarted server only so).
    fn connection(&self, again: bool) -> Result<Arc<Conn>> {
        if !again {
            if let Some(c) = &*self.conn.load() {
                return Ok(c.clone());
            }
        }
        let _g = self.connecting.lock();
        if !again {
            if let Some(c) = &*self.conn.load() {
                return Ok(c.clone());
            }
        }
        self.conn.store(None);
        let c = match Conn::open(&self.id, &self.module, &self.token, &self.pin, false) {
            Ok(c) => c,
            Err(e) if !e.msg.contains("PIN") => {
                tracing::debug!(instance = %self.id, "reconnecting with the module initialised again: {e}");
                Conn::open(&self.id, &self.module, &self.token, &self.pin, true)?
            }
            Err(e) => return Err(e),
        };
        let c = Arc::new(c);
        self.conn.store(Some(c.clone()));
        Ok(c)
    }

    /// Run `f` on a pooled session. If the backend lost its sessions (it restarted, the
    /// connection dropped), connect again and retry once.
    fn call<T>(
        &self,
        what: &str,
        mut f: impl FnMut(&Conn, &Session) -> std::result::Result<T, Failure>,
    ) -> Result<T> {
        self.check_fault()?;
        let mut again = false;
        loop {
            let conn = self.connection(again)?;
            let taken = {
                let _in = conn.gate.read_recursive();
                conn.take(&self.id)
            };
            let s = match taken {
                Ok(s) => s,
                Err(e) if !again => {
                    tracing::debug!(instance = %self.id, "no session ({e}); reconnecting");
                    again = true;
                    continue;
                }
                Err(e) => return Err(e),
            };
            let result = {
                let _in = conn.gate.read_recursive();
                f(&conn, &s)
            };
            match result {
                Ok(v) => {
                    conn.give_back(s);
                    return Ok(v);
                }
                Err(Failure::Backend(e)) if !again && sessions_vanished(&e) => {
                    tracing::info!(instance = %self.id, "{what}: {e}; reconnecting and retrying");
                    conn.discard(s);
                    again = true;
                }
                Err(Failure::Backend(e)) => {
                    let err = backend_error(&self.id, what, e);
                    if err.is_device_failure() {
                        conn.discard(s);
                    } else {
                        conn.give_back(s);
                    }
                    return Err(err);
                }
                Err(Failure::Ours(e)) => {
                    conn.give_back(s);
                    return Err(e);
                }
            }
        }
    }

    /// The backend handle of the key `cks:<uid>`.
    fn key_handle(
        &self,
        conn: &Conn,
        s: &Session,
        uid: Uuid,
    ) -> std::result::Result<ObjectHandle, Failure> {
        if let Some(h) = conn.handles.lock().get(&uid) {
            return Ok(*h);
        }
        let found = s.find_objects(&[Attribute::Label(key_label(uid).into_bytes())])?;
        let h = *found.first().ok_or_else(|| {
            Failure::Ours(Error::new(
                CKR_KEY_HANDLE_INVALID,
                format!("key {uid} is not on instance {}", self.id),
            ))
        })?;
        conn.handles.lock().insert(uid, h);
        Ok(h)
    }

    fn domain_handle(s: &Session) -> std::result::Result<Option<ObjectHandle>, CkError> {
        Ok(s.find_objects(&[
            Attribute::Class(ObjectClass::SECRET_KEY),
            Attribute::Label(DOMAIN_KEY_LABEL.as_bytes().to_vec()),
        ])?
        .first()
        .copied())
    }

    fn domain_key(&self, s: &Session) -> std::result::Result<ObjectHandle, Failure> {
        Self::domain_handle(s)?.ok_or_else(|| {
            Failure::Ours(Error::device(format!(
                "instance {} has no domain key: it needs repair",
                self.id
            )))
        })
    }

    /// Every cks data object, the newest of each label: (label, value, handle).
    fn data_objects(
        s: &Session,
    ) -> std::result::Result<Vec<(String, Vec<u8>, ObjectHandle)>, CkError> {
        Self::data_matching(s, None)
    }

    /// Data objects (all, or those labelled `label`), the newest of each label. Values
    /// start with a write sequence number: backends need not let a data object's value
    /// change, so a write makes a new object and then removes the old one, and a crash
    /// in between leaves two, of which the newer counts.
    fn data_matching(
        s: &Session,
        label: Option<&str>,
    ) -> std::result::Result<Vec<(String, Vec<u8>, ObjectHandle)>, CkError> {
        let mut template = vec![
            Attribute::Class(ObjectClass::DATA),
            Attribute::Application(APPLICATION.to_vec()),
        ];
        if let Some(l) = label {
            template.push(Attribute::Label(l.as_bytes().to_vec()));
        }
        let mut newest: HashMap<String, (u64, Vec<u8>, ObjectHandle)> = HashMap::new();
        for h in s.find_objects(&template)? {
            let attrs = s.get_attributes(h, &[AttributeType::Label, AttributeType::Value])?;
            let (mut label, mut value) = (None, Vec::new());
            for a in attrs {
                match a {
                    Attribute::Label(l) => label = Some(String::from_utf8_lossy(&l).to_string()),
                    Attribute::Value(v) => value = v,
                    _ => {}
                }
            }
            let (Some(l), Some(seq)) = (label, value.get(..8)) else {
                continue;
            };
            let seq = u64::from_be_bytes(seq.try_into().unwrap_or_default());
            if newest.get(&l).is_none_or(|(n, _, _)| seq > *n) {
                newest.insert(l, (seq, value[8..].to_vec(), h));
            }
        }
        Ok(newest.into_iter().map(|(l, (_, v, h))| (l, v, h)).collect())
    }

    fn find_data(
        s: &Session,
        label: &str,
    ) -> std::result::Result<Option<(Vec<u8>, ObjectHandle)>, CkError> {
        Ok(Self::data_matching(s, Some(label))?
            .into_iter()
            .next()
            .map(|(_, v, h)| (v, h)))
    }

    /// Remove every data object labelled `label`.
    fn remove_data(s: &Session, label: &str) -> std::result::Result<(), CkError> {
        for h in s.find_objects(&[
            Attribute::Class(ObjectClass::DATA),
            Attribute::Application(APPLICATION.to_vec()),
            Attribute::Label(label.as_bytes().to_vec()),
        ])? {
            s.destroy_object(h)?;
        }
        Ok(())
    }

    fn write_data(s: &Session, label: &str, value: Vec<u8>) -> std::result::Result<(), CkError> {
        let old = s.find_objects(&[
            Attribute::Class(ObjectClass::DATA),
            Attribute::Application(APPLICATION.to_vec()),
            Attribute::Label(label.as_bytes().to_vec()),
        ])?;
        let seq = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0);
        let mut v = seq.to_be_bytes().to_vec();
        v.extend_from_slice(&value);
        s.create_object(&[
            Attribute::Class(ObjectClass::DATA),
            Attribute::Token(true),
            Attribute::Private(true),
            Attribute::Application(APPLICATION.to_vec()),
            Attribute::Label(label.as_bytes().to_vec()),
            Attribute::Value(v),
        ])?;
        for h in old {
            s.destroy_object(h)?;
        }
        Ok(())
    }

    /// Something changed: a new change counter, for this process and other hosts.
    fn bump_version(&self, s: &Session) -> std::result::Result<(), CkError> {
        let v = rand::random::<i64>();
        Self::write_data(s, VERSION_LABEL, v.to_be_bytes().to_vec())?;
        *self.version.lock() = Some((Instant::now(), v));
        Ok(())
    }

    fn record(&self, s: &Session, uid: Uuid) -> std::result::Result<Option<Record>, Failure> {
        match Self::find_data(s, &object_label(uid))? {
            None => Ok(None),
            Some((v, _)) => postcard::from_bytes(&v).map(Some).map_err(|e| {
                Failure::Ours(Error::device(format!(
                    "instance {}: unreadable record of {uid}: {e}",
                    self.id
                )))
            }),
        }
    }

    fn write_record(&self, s: &Session, uid: Uuid, r: &Record) -> std::result::Result<(), Failure> {
        let bytes = postcard::to_stdvec(r)
            .map_err(|e| Failure::Ours(Error::general(format!("record: {e}"))))?;
        Self::write_data(s, &object_label(uid), bytes)?;
        Ok(())
    }

    /// Remove the backend's key and record of an object.
    fn remove(&self, conn: &Conn, s: &Session, uid: Uuid) -> std::result::Result<(), CkError> {
        conn.handles.lock().remove(&uid);
        for h in s.find_objects(&[Attribute::Label(key_label(uid).into_bytes())])? {
            s.destroy_object(h)?;
        }
        Self::remove_data(s, &object_label(uid))
    }

    /// Refuse a mechanism the backend does not offer (`CKR_MECHANISM_INVALID`: the
    /// cluster then asks another member).
    fn require(&self, mech: &Mechanism) -> Result<()> {
        let t: CK_MECHANISM_TYPE = ops::with_ck(mech, |ck| ck.mechanism_type().into())?;
        if self.connection(false)?.mechanisms.contains(&t) {
            return Ok(());
        }
        Err(Error::mech_invalid(format!(
            "instance {}: its module does not offer mechanism 0x{t:x}",
            self.id
        )))
    }

    fn ensure_unlocked(&self) -> Result<()> {
        if !self.unlocked.load(Ordering::Relaxed) {
            return Err(Error::new(
                CKR_USER_NOT_LOGGED_IN,
                "instance is locked: log in first",
            ));
        }
        Ok(())
    }

    /// Material this process may hold, if the object has any (`None`: the key is in
    /// the backend).
    fn local_material(&self, uid: Uuid) -> Result<Option<Arc<KeyMaterial>>> {
        if let Some(m) = self.materials.read().get(&uid) {
            return Ok(Some(m.clone()));
        }
        if self.backend_keys.read().contains_key(&uid) {
            return Ok(None);
        }
        let record = self.call("C_FindObjects", |_, s| self.record(s, uid))?;
        match record {
            None => Err(Error::new(
                CKR_KEY_HANDLE_INVALID,
                format!("key {uid} is not on instance {}", self.id),
            )),
            Some(r @ Record { sealed: true, .. }) => {
                let a = Attributes::decode(&r.attrs)?;
                let facts = KeyFacts {
                    key_type: a.key_type().unwrap_or(CKK_GENERIC_SECRET),
                    curve: a
                        .get(CKA_EC_PARAMS)
                        .and_then(|p| crate::token::keys::curve_from_params(p).ok()),
                    modulus_len: a.get(CKA_MODULUS).map(|n| n.len()),
                };
                self.backend_keys.write().insert(uid, Arc::new(facts));
                Ok(None)
            }
            Some(Record {
                public: Some(p), ..
            }) => {
                let m = Arc::new(KeyMaterial::decode(&p)?);
                self.materials.write().insert(uid, m.clone());
                Ok(Some(m))
            }
            Some(_) => Err(Error::new(
                CKR_KEY_TYPE_INCONSISTENT,
                "object has no key material",
            )),
        }
    }

    /// What a backend key is (from its attributes), for output sizes.
    fn key_facts(&self, uid: Uuid) -> Result<Arc<KeyFacts>> {
        self.ensure_unlocked()?;
        if let Some(f) = self.backend_keys.read().get(&uid) {
            return Ok(f.clone());
        }
        self.local_material(uid)?;
        self.backend_keys
            .read()
            .get(&uid)
            .cloned()
            .ok_or_else(|| Error::key_type("not a key held by the backend"))
    }
}

struct KeyFacts {
    key_type: CK_KEY_TYPE,
    curve: Option<Curve>,
    modulus_len: Option<usize>,
}

fn key_label(uid: Uuid) -> String {
    format!("{KEY_PREFIX}{uid}")
}

fn object_label(uid: Uuid) -> String {
    format!("{OBJECT_PREFIX}{uid}")
}

fn cmk_label(id: Uuid) -> String {
    format!("{CMK_PREFIX}{id}")
}

/// Backend attributes of a token key: sensitive, and extractable only under a trusted
/// key (the domain key). Uses are all allowed here; cks enforces each key's own.
fn key_template(class: CK_OBJECT_CLASS, key_type: CK_KEY_TYPE, uid: Uuid) -> Vec<Attribute> {
    let mut t = vec![
        Attribute::Token(true),
        Attribute::Private(true),
        Attribute::Sensitive(true),
        Attribute::Extractable(true),
        Attribute::WrapWithTrusted(true),
        Attribute::Label(key_label(uid).into_bytes()),
        Attribute::Id(uid.as_bytes().to_vec()),
    ];
    // Every use the class knows is set, true or false: a backend's defaults for the
    // ones left out may be wider than what the key is for.
    let (sign, decrypt, unwrap, derive) = match (class, key_type) {
        (CKO_SECRET_KEY, CKK_AES) => (false, true, true, false),
        (CKO_SECRET_KEY, _) => (true, false, false, false),
        (_, CKK_EC) => (true, false, false, true),
        _ => (true, true, true, false),
    };
    t.extend([
        Attribute::Sign(sign),
        Attribute::Decrypt(decrypt),
        Attribute::Unwrap(unwrap),
        Attribute::Derive(derive),
    ]);
    if class == CKO_SECRET_KEY {
        // Secret keys work both ways: what signs verifies, what decrypts encrypts.
        t.extend([
            Attribute::Verify(sign),
            Attribute::Encrypt(decrypt),
            Attribute::Wrap(unwrap),
        ]);
    } else {
        t.push(Attribute::SignRecover(false));
    }
    t
}

fn ck_key_type(kt: CK_KEY_TYPE) -> KeyType {
    match kt {
        CKK_AES => KeyType::AES,
        CKK_EC => KeyType::EC,
        CKK_RSA => KeyType::RSA,
        _ => KeyType::GENERIC_SECRET,
    }
}

fn ck_class(class: CK_OBJECT_CLASS) -> ObjectClass {
    if class == CKO_PRIVATE_KEY {
        ObjectClass::PRIVATE_KEY
    } else {
        ObjectClass::SECRET_KEY
    }
}

impl Instance for Pkcs11Instance {
    fn id(&self) -> &str {
        &self.inner.id
    }

    fn kind(&self) -> &'static str {
        "pkcs11"
    }

    fn is_remote(&self) -> bool {
        true
    }

    fn probe(&self) -> Result<()> {
        self.inner.call("C_GetSessionInfo", |_, s| {
            Ok(s.get_session_info().map(|_| ())?)
        })
    }

    fn is_initialized(&self) -> Result<bool> {
        self.inner.call("C_FindObjects", |_, s| {
            Ok(Inner::domain_handle(s)?.is_some())
        })
    }

    /// The domain-key ceremony: whatever cks kept here before is removed, and the
    /// domain key enters as a trusted key. PKCS#11 lets only the SO set `CKA_TRUSTED`,
    /// and an SO cannot create private objects: the key is public but sensitive and
    /// never extractable.
    fn initialize(&self, _keystore_key: &InstanceKey, domain_key: &[u8]) -> Result<()> {
        let me = &self.inner;
        let so_pin = me
            .so_pin
            .as_ref()
            .ok_or_else(|| {
                Error::device(format!(
                    "instance {}: installing the domain key needs the token's SO PIN \
                     (set so_pin_env or so_pin_file for this step)",
                    me.id
                ))
            })?
            .read(&me.id, "SO PIN")?;
        let user_pin = me.pin.read(&me.id, "user PIN")?;
        me.call("C_DestroyObject", |conn, s| {
            conn.handles.lock().clear();
            for h in s.find_objects(&[
                Attribute::Class(ObjectClass::DATA),
                Attribute::Application(APPLICATION.to_vec()),
            ])? {
                s.destroy_object(h)?;
            }
            for class in [ObjectClass::SECRET_KEY, ObjectClass::PRIVATE_KEY] {
                for h in s.find_objects(&[Attribute::Class(class)])? {
                    let label = conn::attribute(s, h, AttributeType::Label);
                    if let Some(Attribute::Label(l)) = label {
                        if l.starts_with(KEY_PREFIX.as_bytes()) || l == DOMAIN_KEY_LABEL.as_bytes()
                        {
                            s.destroy_object(h)?;
                        }
                    }
                }
            }
            Ok(())
        })?;
        me.materials.write().clear();
        let conn = me.connection(false)?;
        conn.as_so(&me.id, &so_pin, &user_pin, |s| {
            let mut template = vec![
                Attribute::Class(ObjectClass::SECRET_KEY),
                Attribute::KeyType(KeyType::AES),
                Attribute::Token(true),
                Attribute::Private(false),
                Attribute::Sensitive(true),
                Attribute::Extractable(false),
                Attribute::Trusted(true),
                Attribute::Modifiable(false),
                Attribute::Wrap(true),
                Attribute::Unwrap(true),
                Attribute::Encrypt(false),
                Attribute::Decrypt(false),
                Attribute::Sign(false),
                Attribute::Verify(false),
                Attribute::Derive(false),
                Attribute::Label(DOMAIN_KEY_LABEL.as_bytes().to_vec()),
                Attribute::Value(domain_key.to_vec()),
            ];
            // Whatever the domain key unwraps stays sensitive and wrappable only under a
            // trusted key: without this, a holder of the token's user PIN could wrap a
            // key under the domain key and unwrap it as an extractable one.
            let unwrap_template = crate::ffi::attribute_array::AttributeArray::new(&[
                (CKA_SENSITIVE, &[1]),
                (CKA_WRAP_WITH_TRUSTED, &[1]),
            ]);
            template.push(Attribute::VendorDefined((
                AttributeType::VendorDefined(CKA_UNWRAP_TEMPLATE),
                unwrap_template.bytes().to_vec(),
            )));
            let mut r = s.create_object(&template);
            if let Err(e) = &r {
                // Not every module takes attribute templates (p11-kit's remoting does
                // not carry them).
                tracing::warn!(instance = %me.id, "the module refused CKA_UNWRAP_TEMPLATE ({e}): the domain key goes in without one");
                template.pop();
                r = s.create_object(&template);
            }
            wipe(&mut template);
            r.map_err(|e| backend_error(&me.id, "installing the domain key", e))
        })?;
        me.call("C_CreateObject", |_, s| Ok(me.bump_version(s)?))?;
        me.unlocked.store(true, Ordering::Relaxed);
        tracing::info!(instance = %me.id, "domain key installed (trusted wrapping key)");
        Ok(())
    }

    fn unlock(&self, _keystore_key: &InstanceKey) -> Result<()> {
        if !self.is_initialized()? {
            return Err(Error::device(format!(
                "instance {} has no domain key: it needs repair",
                self.inner.id
            )));
        }
        self.inner.unlocked.store(true, Ordering::Relaxed);
        Ok(())
    }

    fn is_unlocked(&self) -> bool {
        self.inner.unlocked.load(Ordering::Relaxed)
    }

    fn domain_key(&self) -> Result<Zeroizing<Vec<u8>>> {
        Err(Error::new(
            CKR_KEY_UNEXTRACTABLE,
            format!("the domain key never leaves instance {}", self.inner.id),
        ))
    }

    fn lock(&self, _token_uids: &[Uuid]) {
        self.inner.unlocked.store(false, Ordering::Relaxed);
    }

    fn data_version(&self) -> Result<i64> {
        let me = &self.inner;
        me.check_fault()?;
        if let Some((at, v)) = *me.version.lock() {
            if at.elapsed() < VERSION_TTL {
                return Ok(v);
            }
        }
        let v = me.call("C_FindObjects", |_, s| {
            Ok(Inner::find_data(s, VERSION_LABEL)?
                .and_then(|(v, _)| v.try_into().ok())
                .map(i64::from_be_bytes)
                .unwrap_or(0))
        })?;
        *me.version.lock() = Some((Instant::now(), v));
        Ok(v)
    }

    fn load_objects(&self) -> Result<Vec<StoredObject>> {
        let me = &self.inner;
        let data = me.call("C_FindObjects", |_, s| Ok(Inner::data_objects(s)?))?;
        let mut out = Vec::new();
        for (label, value, _) in data {
            let Some(uid) = label
                .strip_prefix(OBJECT_PREFIX)
                .and_then(|u| Uuid::parse_str(u).ok())
            else {
                continue;
            };
            match postcard::from_bytes::<Record>(&value) {
                Ok(r) => out.push(StoredObject {
                    uid,
                    attrs: r.attrs,
                    material: r.public,
                    sealed: r.sealed,
                }),
                Err(e) => tracing::error!(instance = %me.id, %uid, "unreadable record: {e}"),
            }
        }
        Ok(out)
    }

    fn put_cmk(&self, id: Uuid, generation: u64, meta: &[u8]) -> Result<bool> {
        let me = &self.inner;
        me.call("C_CreateObject", |_, s| {
            let label = cmk_label(id);
            if let Some((v, _)) = Inner::find_data(s, &label)? {
                let have = v
                    .get(..8)
                    .and_then(|b| b.try_into().ok())
                    .map(u64::from_be_bytes)
                    .unwrap_or(0);
                if have >= generation {
                    return Ok(false);
                }
            }
            let mut value = generation.to_be_bytes().to_vec();
            value.extend_from_slice(meta);
            Inner::write_data(s, &label, value)?;
            me.bump_version(s)?;
            Ok(true)
        })
    }

    fn load_cmks(&self) -> Result<Vec<(Uuid, u64, Vec<u8>)>> {
        let data = self
            .inner
            .call("C_FindObjects", |_, s| Ok(Inner::data_objects(s)?))?;
        Ok(data
            .into_iter()
            .filter_map(|(label, value, _)| {
                let id = Uuid::parse_str(label.strip_prefix(CMK_PREFIX)?).ok()?;
                let g = u64::from_be_bytes(value.get(..8)?.try_into().ok()?);
                Some((id, g, value[8..].to_vec()))
            })
            .collect())
    }

    fn delete_cmk(&self, id: Uuid) -> Result<()> {
        let me = &self.inner;
        me.call("C_DestroyObject", |_, s| {
            if Inner::find_data(s, &cmk_label(id))?.is_some() {
                Inner::remove_data(s, &cmk_label(id))?;
                me.bump_version(s)?;
            }
            Ok(())
        })
    }

    fn has_object(&self, uid: Uuid) -> Result<bool> {
        self.inner.call("C_FindObjects", |_, s| {
            Ok(Inner::find_data(s, &object_label(uid))?.is_some()
                || !s
                    .find_objects(&[Attribute::Label(key_label(uid).into_bytes())])?
                    .is_empty())
        })
    }

    fn key_count(&self) -> Result<usize> {
        Ok(self.load_objects()?.iter().filter(|o| o.sealed).count())
    }

    fn object_ids(&self) -> Result<Vec<Uuid>> {
        Ok(self.load_objects()?.into_iter().map(|o| o.uid).collect())
    }

    fn put_object(
        &self,
        uid: Uuid,
        attrs: Vec<u8>,
        material: Option<KeyMaterial>,
        persistent: bool,
    ) -> Result<()> {
        let me = &self.inner;
        if !persistent {
            if let Some(m) = material {
                me.materials.write().insert(uid, Arc::new(m));
            }
            return Ok(());
        }
        let public = match &material {
            Some(m) if m.is_private() || matches!(m, KeyMaterial::Secret(_)) => {
                return Err(Error::new(
                    CKR_TEMPLATE_INCONSISTENT,
                    format!(
                        "instance {}: token keys are generated inside the HSM, not imported",
                        me.id
                    ),
                ))
            }
            Some(m) => Some(m.encode()?.to_vec()),
            None => None,
        };
        let record = Record {
            attrs,
            public,
            sealed: false,
        };
        me.call("C_CreateObject", |_, s| {
            me.write_record(s, uid, &record)?;
            Ok(me.bump_version(s)?)
        })?;
        if let Some(m) = material {
            me.materials.write().insert(uid, Arc::new(m));
        }
        Ok(())
    }

    fn generate(&self, uid: Uuid, spec: &KeySpec, attrs: AttrsOf) -> Result<Option<KeyMaterial>> {
        let me = &self.inner;
        me.ensure_unlocked()?;
        let (class, key_type) = match spec {
            KeySpec::Aes(_) => (CKO_SECRET_KEY, CKK_AES),
            KeySpec::GenericSecret(_) => (CKO_SECRET_KEY, CKK_GENERIC_SECRET),
            KeySpec::Ec(_) => (CKO_PRIVATE_KEY, CKK_EC),
            KeySpec::Rsa { .. } => (CKO_PRIVATE_KEY, CKK_RSA),
        };
        let mut private = key_template(class, key_type, uid);
        let (key, public) = me.call("C_GenerateKey", |_, s| {
            Ok(match spec {
                KeySpec::Aes(n) | KeySpec::GenericSecret(n) => {
                    let mut t = private.clone();
                    t.extend([
                        Attribute::Class(ObjectClass::SECRET_KEY),
                        Attribute::KeyType(ck_key_type(key_type)),
                        Attribute::ValueLen((*n as u64).into()),
                    ]);
                    let mech = if key_type == CKK_AES {
                        Ck::AesKeyGen
                    } else {
                        Ck::GenericSecretKeyGen
                    };
                    (s.generate_key(&mech, &t)?, None)
                }
                KeySpec::Ec(curve) => {
                    let params = crate::token::keys::curve_params(*curve).to_vec();
                    let pub_t = [
                        Attribute::Token(false),
                        Attribute::Verify(true),
                        Attribute::EcParams(params),
                    ];
                    let (p, k) = s.generate_key_pair(&Ck::EccKeyPairGen, &pub_t, &private)?;
                    let point = match conn::attribute(s, p, AttributeType::EcPoint) {
                        Some(Attribute::EcPoint(v)) => v,
                        _ => Vec::new(),
                    };
                    let _ = s.destroy_object(p);
                    let m = KeyMaterial::ec_public_from_point(
                        *curve,
                        crate::token::keys::unwrap_octet_string(&point),
                    )
                    .map_err(Failure::Ours)?;
                    (k, Some(m))
                }
                KeySpec::Rsa {
                    bits,
                    public_exponent,
                } => {
                    let e = if public_exponent.is_empty() {
                        vec![1, 0, 1]
                    } else {
                        public_exponent.clone()
                    };
                    let pub_t = [
                        Attribute::Token(false),
                        Attribute::Verify(true),
                        Attribute::Encrypt(true),
                        Attribute::ModulusBits((*bits as u64).into()),
                        Attribute::PublicExponent(e),
                    ];
                    let (p, k) = s.generate_key_pair(&Ck::RsaPkcsKeyPairGen, &pub_t, &private)?;
                    let got = s.get_attributes(
                        p,
                        &[AttributeType::Modulus, AttributeType::PublicExponent],
                    )?;
                    let _ = s.destroy_object(p);
                    let (mut n, mut e) = (Vec::new(), Vec::new());
                    for a in got {
                        match a {
                            Attribute::Modulus(v) => n = v,
                            Attribute::PublicExponent(v) => e = v,
                            _ => {}
                        }
                    }
                    (
                        k,
                        Some(KeyMaterial::rsa_public_from(&n, &e).map_err(Failure::Ours)?),
                    )
                }
            })
        })?;
        private.clear();
        let stored = attrs(public.as_ref()).and_then(|a| {
            let record = Record {
                attrs: a,
                public: None,
                sealed: true,
            };
            me.call("C_CreateObject", |_, s| {
                me.write_record(s, uid, &record)?;
                Ok(me.bump_version(s)?)
            })
        });
        if let Err(e) = stored {
            let _ = me.call("C_DestroyObject", |_, s| Ok(s.destroy_object(key)?));
            return Err(e);
        }
        Ok(public)
    }

    fn can_export(&self) -> bool {
        self.inner.require(&DOMAIN_WRAP).is_ok()
    }

    fn export(&self, uid: Uuid) -> Result<StoredObject> {
        let me = &self.inner;
        let kwp = me.require(&DOMAIN_WRAP);
        me.call("C_WrapKey", |conn, s| {
            let record = me.record(s, uid)?.ok_or_else(|| {
                Failure::Ours(Error::new(
                    CKR_OBJECT_HANDLE_INVALID,
                    "object not on this instance",
                ))
            })?;
            let material = if record.sealed {
                kwp.clone().map_err(Failure::Ours)?;
                let dk = me.domain_key(s)?;
                let k = me.key_handle(conn, s, uid)?;
                Some(s.wrap_key(&Ck::AesKeyWrapPad, dk, k)?)
            } else {
                record.public
            };
            Ok(StoredObject {
                uid,
                attrs: record.attrs,
                material,
                sealed: record.sealed,
            })
        })
    }

    fn import(&self, obj: StoredObject) -> Result<()> {
        let me = &self.inner;
        let attrs = Attributes::decode(&obj.attrs)?;
        let class = attrs.class();
        let key_type = attrs.key_type().unwrap_or(CKK_GENERIC_SECRET);
        if obj.sealed {
            me.require(&DOMAIN_WRAP)?;
        }
        me.call("C_UnwrapKey", |conn, s| {
            me.remove(conn, s, obj.uid)?;
            let public = match (&obj.material, obj.sealed) {
                (Some(wrapped), true) => {
                    let dk = me.domain_key(s)?;
                    let mut t = key_template(class, key_type, obj.uid);
                    t.extend([
                        Attribute::Class(ck_class(class)),
                        Attribute::KeyType(ck_key_type(key_type)),
                    ]);
                    s.unwrap_key(&Ck::AesKeyWrapPad, dk, wrapped, &t)?;
                    None
                }
                (m, _) => m.clone(),
            };
            me.write_record(
                s,
                obj.uid,
                &Record {
                    attrs: obj.attrs.clone(),
                    public,
                    sealed: obj.sealed,
                },
            )?;
            Ok(me.bump_version(s)?)
        })
    }

    /// Only with `accept_plaintext_keys`: the key's value enters the backend as a
    /// sensitive object over the module's own channel.
    fn import_plain(&self, obj: StoredObject, material: &KeyMaterial) -> Result<()> {
        let me = &self.inner;
        if !me.accept_plaintext_keys {
            return Err(Error::mech_invalid(format!(
                "instance {}: its module cannot unwrap under the domain key (no \
                 CKM_AES_KEY_WRAP_PAD); set accept_plaintext_keys = true to copy keys in \
                 as values over its channel",
                me.id
            )));
        }
        let attrs = Attributes::decode(&obj.attrs)?;
        let class = attrs.class();
        let key_type = attrs.key_type().unwrap_or(CKK_GENERIC_SECRET);
        let mut template = key_template(class, key_type, obj.uid);
        template.extend([
            Attribute::Class(ck_class(class)),
            Attribute::KeyType(ck_key_type(key_type)),
        ]);
        let component = |t: CK_ATTRIBUTE_TYPE| -> Result<Vec<u8>> {
            material
                .private_component(t)
                .map(|v| v.to_vec())
                .ok_or_else(|| Error::general("key component missing"))
        };
        match material {
            KeyMaterial::Secret(v) => template.push(Attribute::Value(v.to_vec())),
            KeyMaterial::EcPrivate(_) => {
                let curve = material.curve().ok_or_else(|| Error::general("curve"))?;
                template.push(Attribute::EcParams(
                    crate::token::keys::curve_params(curve).to_vec(),
                ));
                template.push(Attribute::Value(component(CKA_VALUE)?));
            }
            KeyMaterial::RsaPrivate(_) => {
                template.extend([
                    Attribute::Modulus(material.rsa_modulus().unwrap_or_default()),
                    Attribute::PublicExponent(material.rsa_public_exponent().unwrap_or_default()),
                    Attribute::PrivateExponent(component(CKA_PRIVATE_EXPONENT)?),
                    Attribute::Prime1(component(CKA_PRIME_1)?),
                    Attribute::Prime2(component(CKA_PRIME_2)?),
                    Attribute::Exponent1(component(CKA_EXPONENT_1)?),
                    Attribute::Exponent2(component(CKA_EXPONENT_2)?),
                    Attribute::Coefficient(component(CKA_COEFFICIENT)?),
                ]);
            }
            _ => {
                return obj_without_key(self, obj, material);
            }
        }
        let r = me.call("C_CreateObject", |conn, s| {
            me.remove(conn, s, obj.uid)?;
            s.create_object(&template)?;
            me.write_record(
                s,
                obj.uid,
                &Record {
                    attrs: obj.attrs.clone(),
                    public: None,
                    sealed: true,
                },
            )?;
            Ok(me.bump_version(s)?)
        });
        wipe(&mut template);
        r
    }

    fn update_attrs(&self, uid: Uuid, attrs: &[u8]) -> Result<()> {
        let me = &self.inner;
        me.call("C_SetAttributeValue", |_, s| {
            let mut r = me.record(s, uid)?.ok_or_else(|| {
                Failure::Ours(Error::new(
                    CKR_OBJECT_HANDLE_INVALID,
                    "object no longer exists",
                ))
            })?;
            r.attrs = attrs.to_vec();
            me.write_record(s, uid, &r)?;
            Ok(me.bump_version(s)?)
        })
    }

    fn destroy(&self, uid: Uuid, persistent: bool) -> Result<()> {
        let me = &self.inner;
        me.materials.write().remove(&uid);
        me.backend_keys.write().remove(&uid);
        if persistent {
            me.call("C_DestroyObject", |conn, s| {
                me.remove(conn, s, uid)?;
                Ok(me.bump_version(s)?)
            })?;
        }
        Ok(())
    }

    fn put_session_material(&self, uid: Uuid, m: Arc<KeyMaterial>) {
        self.inner.materials.write().insert(uid, m);
    }

    fn material(&self, uid: Uuid) -> Result<Arc<KeyMaterial>> {
        self.inner.local_material(uid)?.ok_or_else(|| {
            Error::new(
                CKR_KEY_UNEXTRACTABLE,
                format!("the key stays inside instance {}", self.inner.id),
            )
        })
    }

    fn cipher(&self, uid: Uuid, mech: &Mechanism, encrypt: bool) -> Result<Box<dyn CipherOp>> {
        let me = &self.inner;
        if let Some(m) = me.local_material(uid)? {
            return if encrypt {
                crypto::encrypt(mech, &m)
            } else {
                crypto::decrypt(mech, &m)
            };
        }
        let facts = me.key_facts(uid)?;
        me.require(mech)?;
        if let Mechanism::AesCbcPad { iv } = mech {
            // whole blocks stream through plain CBC
            me.require(&Mechanism::AesCbc { iv: *iv })?;
        }
        let (extra, fixed) = match (mech, facts.modulus_len) {
            (Mechanism::RsaPkcs | Mechanism::RsaOaep { .. }, Some(n)) => (0, Some(n)),
            (Mechanism::AesGcm { tag_bits, .. }, _) => ((*tag_bits as usize).div_ceil(8), None),
            _ => (16, None),
        };
        if facts.key_type == CKK_RSA && encrypt {
            return Err(Error::key_type("encrypt with the public key"));
        }
        Ok(Box::new(ops::RemoteCipher {
            inner: me.clone(),
            uid,
            mech: mech.clone(),
            encrypt,
            data: Zeroizing::new(Vec::new()),
            extra,
            fixed,
        }))
    }

    fn signer(&self, uid: Uuid, mech: &Mechanism) -> Result<Box<dyn SignOp>> {
        let me = &self.inner;
        if let Some(m) = me.local_material(uid)? {
            return crypto::sign(mech, &m);
        }
        let facts = me.key_facts(uid)?;
        me.require(&ops::sign_plan(mech, &[])?.0)?;
        let len = match (mech, facts.curve, facts.modulus_len) {
            (Mechanism::Hmac(h), _, _) => h.output_len(),
            (_, Some(c), _) => 2 * c.field_len(),
            (_, _, Some(n)) => n,
            _ => return Err(Error::key_type("key does not sign")),
        };
        Ok(Box::new(ops::RemoteSign {
            inner: me.clone(),
            uid,
            mech: mech.clone(),
            data: Vec::new(),
            len,
        }))
    }

    fn verifier(&self, uid: Uuid, mech: &Mechanism) -> Result<Box<dyn VerifyOp>> {
        let me = &self.inner;
        if let Some(m) = me.local_material(uid)? {
            return crypto::verify(mech, &m);
        }
        me.key_facts(uid)?;
        if !matches!(mech, Mechanism::Hmac(_)) {
            return Err(Error::key_type("verify with the public key"));
        }
        me.require(mech)?;
        Ok(Box::new(ops::RemoteVerify {
            inner: me.clone(),
            uid,
            mech: mech.clone(),
            data: Vec::new(),
        }))
    }

    fn wrap(&self, mech: &Mechanism, wrapping: Uuid, target: Uuid) -> Result<Vec<u8>> {
        let me = &self.inner;
        let tk = me
            .local_material(target)?
            .ok_or_else(|| Error::new(CKR_KEY_UNEXTRACTABLE, "the key is not extractable"))?;
        let KeyMaterial::Secret(value) = &*tk else {
            return Err(Error::mech_invalid(
                "keys held by an external instance wrap secret keys only",
            ));
        };
        if let Some(wk) = me.local_material(wrapping)? {
            return crypto::wrap(mech, &wk, value);
        }
        me.ensure_unlocked()?;
        // The target enters the backend for a moment, as a session object.
        me.call("C_WrapKey", |conn, s| {
            let wh = me.key_handle(conn, s, wrapping)?;
            let mut template = vec![
                Attribute::Class(ObjectClass::SECRET_KEY),
                Attribute::KeyType(KeyType::GENERIC_SECRET),
                Attribute::Token(false),
                Attribute::Sensitive(false),
                Attribute::Extractable(true),
                Attribute::Value(value.to_vec()),
            ];
            let created = s.create_object(&template);
            wipe(&mut template);
            let th = created?;
            let r = ops::with_ck(mech, |ck| s.wrap_key(ck, wh, th)).map_err(Failure::Ours)?;
            let _ = s.destroy_object(th);
            Ok(r?)
        })
    }

    fn unwrap(
        &self,
        mech: &Mechanism,
        unwrapping: Uuid,
        wrapped: &[u8],
        private: bool,
    ) -> Result<KeyMaterial> {
        let me = &self.inner;
        if let Some(k) = me.local_material(unwrapping)? {
            let plain = crypto::unwrap(mech, &k, wrapped)?;
            return if private {
                KeyMaterial::private_from_pkcs8(&plain)
            } else {
                Ok(KeyMaterial::Secret(plain))
            };
        }
        if private {
            return Err(Error::mech_invalid(
                "keys held by an external instance unwrap secret keys only",
            ));
        }
        me.ensure_unlocked()?;
        let value = me.call("C_UnwrapKey", |conn, s| {
            let uh = me.key_handle(conn, s, unwrapping)?;
            let t = [
                Attribute::Class(ObjectClass::SECRET_KEY),
                Attribute::KeyType(KeyType::GENERIC_SECRET),
                Attribute::Token(false),
                Attribute::Sensitive(false),
                Attribute::Extractable(true),
            ];
            let h = ops::with_ck(mech, |ck| s.unwrap_key(ck, uh, wrapped, &t))
                .map_err(Failure::Ours)??;
            Ok(read_and_destroy(s, h)?)
        })?;
        Ok(KeyMaterial::Secret(value))
    }

    fn ecdh_derive(
        &self,
        base: Uuid,
        kdf: EcKdf,
        shared_data: &[u8],
        public_data: &[u8],
        len: usize,
    ) -> Result<Zeroizing<Vec<u8>>> {
        let me = &self.inner;
        if let Some(k) = me.local_material(base)? {
            return crypto::ecdh_derive(&k, kdf, shared_data, public_data, len);
        }
        me.ensure_unlocked()?;
        let ck_kdf = match kdf {
            EcKdf::Null => CkKdf::null(),
            EcKdf::X963(HashAlg::Sha1) => CkKdf::sha1(shared_data),
            EcKdf::X963(HashAlg::Sha224) => CkKdf::sha224(shared_data),
            EcKdf::X963(HashAlg::Sha256) => CkKdf::sha256(shared_data),
            EcKdf::X963(HashAlg::Sha384) => CkKdf::sha384(shared_data),
            EcKdf::X963(HashAlg::Sha512) => CkKdf::sha512(shared_data),
        };
        let public = crate::token::keys::unwrap_octet_string(public_data).to_vec();
        me.call("C_DeriveKey", |conn, s| {
            let bh = me.key_handle(conn, s, base)?;
            let params = Ecdh1DeriveParams::new(ck_kdf, &public);
            let t = [
                Attribute::Class(ObjectClass::SECRET_KEY),
                Attribute::KeyType(KeyType::GENERIC_SECRET),
                Attribute::ValueLen((len as u64).into()),
                Attribute::Token(false),
                Attribute::Sensitive(false),
                Attribute::Extractable(true),
            ];
            let h = s.derive_key(&Ck::Ecdh1Derive(params), bh, &t)?;
            Ok(read_and_destroy(s, h)?)
        })
    }
}

/// A public key or an object without secret material: taken in as it is.
fn obj_without_key(i: &Pkcs11Instance, obj: StoredObject, material: &KeyMaterial) -> Result<()> {
    let public = Some(material.encode()?.to_vec());
    i.import(StoredObject {
        material: public,
        sealed: false,
        ..obj
    })
}

/// Zero the secret values of a template once the backend has them.
fn wipe(template: &mut [Attribute]) {
    for a in template.iter_mut() {
        match a {
            Attribute::Value(v)
            | Attribute::PrivateExponent(v)
            | Attribute::Prime1(v)
            | Attribute::Prime2(v)
            | Attribute::Exponent1(v)
            | Attribute::Exponent2(v)
            | Attribute::Coefficient(v) => v.zeroize(),
            _ => {}
        }
    }
}

/// The value of a short-lived backend session key, which is then destroyed.
fn read_and_destroy(
    s: &Session,
    h: ObjectHandle,
) -> std::result::Result<Zeroizing<Vec<u8>>, CkError> {
    let got = s.get_attributes(h, &[AttributeType::Value]);
    let _ = s.destroy_object(h);
    Ok(Zeroizing::new(
        got?.into_iter()
            .find_map(|a| match a {
                Attribute::Value(v) => Some(v),
                _ => None,
            })
            .unwrap_or_default(),
    ))
}
