//! The token: PKCS#11 semantics in safe Rust — sessions, login state, objects and
//! their handles, search, and the operations of each session. It stands on the key
//! store, which stands on the cluster of HSM instances.

pub mod attribute;
pub(crate) mod keys;
pub mod mechanisms;
pub mod objects;
mod ops;
pub mod policy;
pub mod session;

use crate::audit::ops as audit_ops;
use crate::config::Config;
use crate::error::{Error, Result};
use crate::hsm::embedded::PinUser;
use crate::keystore::KeyStore;
use attribute::{AttrType, Attributes, Template};
use dashmap::DashMap;
use objects::{Object, ObjectTable};
use parking_lot::{Mutex, RwLock};
use pkcs11_sys::*;
use policy::Readable;
use session::Session;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use uuid::Uuid;

pub use session::{OpKind, Out};

pub const MIN_PIN_LEN: usize = 4;
pub const MAX_PIN_LEN: usize = 64;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Login {
    Public,
    User,
    So,
}

/// What `C_GetTokenInfo` reports, in Rust types.
pub struct TokenInfo {
    pub label: String,
    pub serial: String,
    pub flags: CK_FLAGS,
    pub session_count: usize,
    pub rw_session_count: usize,
}

pub struct Token {
    label: String,
    keystore: Arc<KeyStore>,
    /// Looked up on every call: a sharded map, so threads with their own sessions do
    /// not contend on one lock.
    /// Handles are ours (not chosen by callers), so a fast non-keyed hash is safe.
    sessions: DashMap<CK_SESSION_HANDLE, Arc<Mutex<Session>>, rustc_hash::FxBuildHasher>,
    next_session: AtomicU64,
    initialized: std::sync::atomic::AtomicBool,
    /// Held while the login state changes (a PIN check takes time).
    login: RwLock<Login>,
    /// The login state for readers: a plain load on the per-call path.
    login_now: std::sync::atomic::AtomicU8,
    /// Read on every call, by every thread: sharded so that readers share no lock word.
    objects: crate::read_mostly::ReadMostly<ObjectTable>,
    /// `PRAGMA data_version` when token objects were last loaded; `None`: reload.
    seen_version: Mutex<Option<i64>>,
}

/// The result of reading one attribute (`C_GetAttributeValue`).
pub enum AttrValue {
    Value(Vec<u8>),
    Sensitive,
    Invalid,
}

impl Token {
    pub fn open(cfg: &Config) -> Result<Token> {
        Ok(Token {
            label: cfg.keystore.label.clone(),
            keystore: Arc::new(KeyStore::open(cfg)?),
            sessions: DashMap::with_hasher(rustc_hash::FxBuildHasher),
            next_session: AtomicU64::new(1),
            initialized: std::sync::atomic::AtomicBool::new(false),
            login: RwLock::new(Login::Public),
            login_now: std::sync::atomic::AtomicU8::new(Login::Public as u8),
            objects: crate::read_mostly::ReadMostly::new(ObjectTable::default()),
            seen_version: Mutex::new(None),
        })
    }

    pub fn keystore(&self) -> &Arc<KeyStore> {
        &self.keystore
    }

    pub fn login_state(&self) -> Login {
        match self.login_now.load(std::sync::atomic::Ordering::Acquire) {
            x if x == Login::User as u8 => Login::User,
            x if x == Login::So as u8 => Login::So,
            _ => Login::Public,
        }
    }

    /// Changes the login state; the caller holds `login` for writing.
    fn set_login(&self, held: &mut Login, to: Login) -> Login {
        self.login_now
            .store(to as u8, std::sync::atomic::Ordering::Release);
        std::mem::replace(held, to)
    }

    // ---- token information ------------------------------------------------------

    pub fn info(&self) -> Result<TokenInfo> {
        self.check_present()?;
        let rec = self.keystore.token_record()?;
        let user = self.keystore.pin_status(PinUser::User)?;
        let so = self.keystore.pin_status(PinUser::So)?;
        let max = self.keystore.max_attempts();
        let mut flags = CKF_RNG | CKF_LOGIN_REQUIRED;
        if rec.is_some() {
            flags |= CKF_TOKEN_INITIALIZED;
        }
        if user.initialized {
            flags |= CKF_USER_PIN_INITIALIZED;
        }
        flags |= pin_flags(
            user,
            max,
            CKF_USER_PIN_COUNT_LOW,
            CKF_USER_PIN_FINAL_TRY,
            CKF_USER_PIN_LOCKED,
        );
        flags |= pin_flags(
            so,
            max,
            CKF_SO_PIN_COUNT_LOW,
            CKF_SO_PIN_FINAL_TRY,
            CKF_SO_PIN_LOCKED,
        );
        let sessions = &self.sessions;
        let rw = sessions.iter().filter(|s| s.value().lock().rw).count();
        Ok(TokenInfo {
            label: rec
                .as_ref()
                .map(|r| r.label.clone())
                .unwrap_or_else(|| self.label.clone()),
            serial: rec.map(|r| r.serial).unwrap_or_default(),
            flags,
            session_count: sessions.len(),
            rw_session_count: rw,
        })
    }

    /// Once initialised, a token stays so (re-initialising keeps it initialised), so a
    /// yes is remembered and session opening costs no store access.
    pub fn is_initialized(&self) -> Result<bool> {
        if self.initialized.load(Ordering::Relaxed) {
            return Ok(true);
        }
        let yes = self.keystore.token_record()?.is_some();
        self.initialized.store(yes, Ordering::Relaxed);
        Ok(yes)
    }

    // ---- PINs ---------------------------------------------------------------------

    pub fn init_token(&self, so_pin: &[u8], label: &str) -> Result<()> {
        self.check_present()?;
        check_pin_len(so_pin)?;
        if !self.sessions.is_empty() {
            return Err(Error::new(
                CKR_SESSION_EXISTS,
                "close every session before C_InitToken",
            ));
        }
        self.keystore.init_token(so_pin, label)?;
        *self.objects.write() = ObjectTable::default();
        *self.seen_version.lock() = None;
        tracing::info!(label, "token initialised");
        Ok(())
    }

    pub fn init_pin(&self, h: CK_SESSION_HANDLE, pin: &[u8]) -> Result<()> {
        let s = self.session(h)?;
        if !s.lock().rw {
            return Err(Error::new(
                CKR_SESSION_READ_ONLY,
                "C_InitPIN needs a read/write session",
            ));
        }
        if self.login_state() != Login::So {
            return Err(Error::new(
                CKR_USER_NOT_LOGGED_IN,
                "C_InitPIN needs the SO logged in",
            ));
        }
        check_pin_len(pin)?;
        let r = self.keystore.init_user_pin(pin);
        let rv = r
            .as_ref()
            .map(|_| "CKR_OK")
            .unwrap_or_else(|e| crate::error::rv_name(e.rv));
        self.keystore
            .audit_admin(audit_ops::INIT_PIN, rv, None, None, None)?;
        r
    }

    pub fn set_pin(&self, h: CK_SESSION_HANDLE, old: &[u8], new: &[u8]) -> Result<()> {
        let s = self.session(h)?;
        if !s.lock().rw {
            return Err(Error::new(
                CKR_SESSION_READ_ONLY,
                "C_SetPIN needs a read/write session",
            ));
        }
        check_pin_len(new)?;
        let user = match self.login_state() {
            Login::So => PinUser::So,
            _ => PinUser::User,
        };
        let r = self.keystore.set_pin(user, old, new);
        let rv = r
            .as_ref()
            .map(|_| "CKR_OK")
            .unwrap_or_else(|e| crate::error::rv_name(e.rv));
        self.keystore.audit_admin(
            audit_ops::SET_PIN,
            rv,
            None,
            Some(format!("{user:?}").to_lowercase()),
            None,
        )?;
        r
    }

    // ---- sessions -----------------------------------------------------------------

    pub fn open_session(&self, flags: CK_FLAGS) -> Result<CK_SESSION_HANDLE> {
        self.check_present()?;
        if flags & CKF_SERIAL_SESSION == 0 {
            return Err(Error::new(
                CKR_SESSION_PARALLEL_NOT_SUPPORTED,
                "CKF_SERIAL_SESSION must be set",
            ));
        }
        if !self.is_initialized()? {
            return Err(Error::new(
                CKR_TOKEN_NOT_RECOGNIZED,
                "token is not initialised",
            ));
        }
        let rw = flags & CKF_RW_SESSION != 0;
        if !rw && self.login_state() == Login::So {
            return Err(Error::new(
                CKR_SESSION_READ_WRITE_SO_EXISTS,
                "the SO is logged in: only read/write sessions",
            ));
        }
        let h = self.next_session.fetch_add(1, Ordering::Relaxed);
        self.sessions.insert(
            h,
            Arc::new(Mutex::new(Session::new(h, rw, self.keystore.audit.clone()))),
        );
        Ok(h)
    }

    /// Refuse everything while the key store is disconnected (`cks keystore disconnect`).
    pub fn check_present(&self) -> Result<()> {
        if !self.keystore.is_connected() {
            return Err(Error::new(
                CKR_TOKEN_NOT_PRESENT,
                "the key store is disconnected",
            ));
        }
        Ok(())
    }

    pub fn session(&self, h: CK_SESSION_HANDLE) -> Result<Arc<Mutex<Session>>> {
        self.check_present()?;
        self.session_in_progress(h)
    }

    /// A session for the calls that continue an operation already begun (its `Init`
    /// checked that the key store is connected): no further check on the hot path.
    pub(crate) fn session_in_progress(&self, h: CK_SESSION_HANDLE) -> Result<Arc<Mutex<Session>>> {
        self.sessions
            .get(&h)
            .map(|s| s.value().clone())
            .ok_or_else(|| Error::new(CKR_SESSION_HANDLE_INVALID, "no such session"))
    }

    pub fn close_session(&self, h: CK_SESSION_HANDLE) -> Result<()> {
        self.sessions
            .remove(&h)
            .ok_or_else(|| Error::new(CKR_SESSION_HANDLE_INVALID, "no such session"))?;
        let last = self.sessions.is_empty();
        self.destroy_session_objects(|o| o.session == Some(h));
        if last {
            // "When the last session an application has with a token is closed, the
            // application is logged out."
            self.end_login();
        }
        Ok(())
    }

    pub fn close_all_sessions(&self) {
        self.sessions.clear();
        self.destroy_session_objects(|o| o.session.is_some());
        self.end_login();
    }

    pub fn session_state(&self, h: CK_SESSION_HANDLE) -> Result<(CK_STATE, CK_FLAGS)> {
        let rw = self.session(h)?.lock().rw;
        let state = match (self.login_state(), rw) {
            (Login::Public, false) => CKS_RO_PUBLIC_SESSION,
            (Login::Public, true) => CKS_RW_PUBLIC_SESSION,
            (Login::User, false) => CKS_RO_USER_FUNCTIONS,
            (Login::User, true) => CKS_RW_USER_FUNCTIONS,
            (Login::So, _) => CKS_RW_SO_FUNCTIONS,
        };
        let flags = CKF_SERIAL_SESSION | if rw { CKF_RW_SESSION } else { 0 };
        Ok((state, flags))
    }

    pub fn login(&self, h: CK_SESSION_HANDLE, user: CK_USER_TYPE, pin: &[u8]) -> Result<()> {
        self.session(h)?;
        let who = match user {
            CKU_USER => Login::User,
            CKU_SO => Login::So,
            CKU_CONTEXT_SPECIFIC => {
                return Err(Error::new(
                    CKR_OPERATION_NOT_INITIALIZED,
                    "no key here requires context-specific login",
                ))
            }
            _ => return Err(Error::new(CKR_USER_TYPE_INVALID, "unknown user type")),
        };
        let mut login = self.login.write();
        match (*login, who) {
            (Login::Public, _) => {}
            (a, b) if a == b => {
                return Err(Error::new(CKR_USER_ALREADY_LOGGED_IN, "already logged in"))
            }
            _ => {
                return Err(Error::new(
                    CKR_USER_ANOTHER_ALREADY_LOGGED_IN,
                    "another user type is logged in",
                ))
            }
        }
        if who == Login::So && self.sessions.iter().any(|s| !s.value().lock().rw) {
            return Err(Error::new(
                CKR_SESSION_READ_ONLY_EXISTS,
                "close read-only sessions before the SO logs in",
            ));
        }
        let pin_user = if who == Login::So {
            PinUser::So
        } else {
            PinUser::User
        };
        let result = self.keystore.login(pin_user, pin);
        let reason = Some(format!("{who:?}").to_lowercase());
        match result {
            Ok(()) => {
                self.set_login(&mut login, who);
                drop(login);
                // Private objects become visible: reload with fresh handles.
                *self.seen_version.lock() = None;
                tracing::info!(user = ?who, "login");
                self.keystore
                    .audit_admin(audit_ops::LOGIN, "CKR_OK", None, reason, None)?;
                Ok(())
            }
            Err(e) => {
                tracing::warn!(user = ?who, rv = crate::error::rv_name(e.rv), "login failed");
                let _ = self.keystore.audit_admin(
                    audit_ops::LOGIN,
                    crate::error::rv_name(e.rv),
                    None,
                    reason,
                    None,
                );
                Err(e)
            }
        }
    }

    pub fn logout(&self, h: CK_SESSION_HANDLE) -> Result<()> {
        self.session(h)?;
        if self.login_state() == Login::Public {
            return Err(Error::new(CKR_USER_NOT_LOGGED_IN, "nobody is logged in"));
        }
        self.end_login();
        Ok(())
    }

    /// Log out: private session objects are destroyed, handles to private objects become
    /// invalid, and operations that used private keys end.
    fn end_login(&self) {
        let was = self.set_login(&mut self.login.write(), Login::Public);
        if was == Login::Public {
            return;
        }
        let removed = self.objects.write().remove_where(|o| o.is_private());
        let token_uids: Vec<Uuid> = removed
            .iter()
            .filter(|o| o.is_token())
            .map(|o| o.uid)
            .collect();
        for o in removed.iter().filter(|o| !o.is_token()) {
            let _ = self.keystore.destroy(o.uid, false);
        }
        self.keystore.logout(&token_uids);
        for entry in self.sessions.iter() {
            let mut s = entry.value().lock();
            s.op = None;
            s.find = None;
        }
    }

    fn destroy_session_objects(&self, pred: impl Fn(&Object) -> bool) {
        // Most sessions create no objects: no scan, and no write lock that would stop
        // every other thread's key look-ups.
        if !self.objects.read().has_session_objects() {
            return;
        }
        let removed = self
            .objects
            .write()
            .remove_where(|o| !o.is_token() && pred(o));
        for o in removed {
            let _ = self.keystore.destroy(o.uid, false);
        }
    }

    // ---- objects --------------------------------------------------------------------

    /// Bring token objects up to date with the store (another process may have changed it).
    ///
    /// The store's objects are read and decoded without the table's write lock (key
    /// use goes on meanwhile); only the insertion takes it. With 100,000 keys this
    /// runs at the first search after login and after another process changed the
    /// store, not per call.
    fn sync_objects(&self) -> Result<()> {
        let version = self.keystore.cluster.data_version()?;
        let mut seen = self.seen_version.lock();
        if *seen == Some(version) {
            return Ok(());
        }
        // Objects this process adds from now on are newer than what is read below:
        // they stay even though the read may not show them. (An empty table has
        // nothing to prune: the first load after login skips that bookkeeping.)
        let (newer_than, prune) = {
            let t = self.objects.read();
            (t.last_handle(), !t.is_empty())
        };
        let stored = self.keystore.load_token_objects()?;
        // Key records as new as the objects just read (re-read only if the store
        // changed since they were last read: with many keys that costs).
        self.keystore.refresh_cmks_if_changed()?;
        let show_private = self.login_state() == Login::User;
        let mut present: std::collections::HashSet<Uuid, rustc_hash::FxBuildHasher> =
            Default::default();
        if prune {
            present.reserve(stored.len());
        }
        let mut objects = Vec::with_capacity(stored.len());
        let mut unreadable = Vec::new();
        for (uid, bytes) in stored {
            match Attributes::decode(&bytes) {
                Ok(a) => objects.push((uid, a)),
                Err(e) => {
                    tracing::warn!(%uid, "unreadable object, trying the other members: {e}");
                    unreadable.push(uid);
                }
            }
        }
        if !unreadable.is_empty() {
            // One damaged copy does not hide an object the other members hold intact.
            objects.extend(self.keystore.readable_objects(&unreadable));
        }
        let mut decoded = Vec::with_capacity(objects.len());
        {
            let table = self.objects.read();
            self.keystore.with_cmks(|reg| {
                for (uid, attrs) in objects {
                    if attrs.flag(CKA_PRIVATE) && !show_private {
                        continue;
                    }
                    if prune {
                        present.insert(uid);
                    }
                    // A key whose creation did not finish (its key record was never
                    // written, e.g. the creating process was killed) is not shown; it
                    // is removed later. Keys this process is creating right now are
                    // already in the table.
                    let had = table.by_uid(&uid).cloned();
                    match &had {
                        // Unchanged since the last load: nothing to do.
                        Some(o) if o.is_token() && o.attrs == attrs => continue,
                        None if crate::keystore::is_key_object(&attrs)
                            && !reg.names_object(uid) =>
                        {
                            continue
                        }
                        _ => {}
                    }
                    decoded.push((Object::new(uid, attrs, None), had));
                }
            })?;
        }
        let mut table = self.objects.write();
        table.reserve(decoded.len());
        for (obj, had) in decoded {
            // What this process did to an object while the store was read (created,
            // changed or destroyed it) is newer than what was read: it stands.
            let now = table.by_uid(&obj.uid);
            let untouched = match (&had, now) {
                (Some(a), Some(b)) => Arc::ptr_eq(a, b),
                (None, None) => true,
                _ => false,
            };
            if untouched {
                table.insert(obj);
            }
        }
        if prune {
            table.prune_token_objects(newer_than, |o| present.contains(&o.uid));
        }
        *seen = Some(version);
        Ok(())
    }

    /// An object the session may see. Private objects need the user logged in.
    pub fn object(&self, h: CK_OBJECT_HANDLE) -> Result<Arc<Object>> {
        let obj = self.objects.read().get(h);
        let obj = match obj {
            Some(o) => o,
            None => {
                self.sync_objects()?;
                self.objects
                    .read()
                    .get(h)
                    .ok_or_else(|| Error::new(CKR_OBJECT_HANDLE_INVALID, "no such object"))?
            }
        };
        if obj.is_private() && self.login_state() != Login::User {
            return Err(Error::new(
                CKR_OBJECT_HANDLE_INVALID,
                "object is private: log in as user",
            ));
        }
        Ok(obj)
    }

    fn check_writable(&self, s: &Session, token_object: bool, private: bool) -> Result<()> {
        if token_object && !s.rw {
            return Err(Error::new(
                CKR_SESSION_READ_ONLY,
                "token objects need a read/write session",
            ));
        }
        if private && self.login_state() != Login::User {
            return Err(Error::new(
                CKR_USER_NOT_LOGGED_IN,
                "private objects need the user logged in",
            ));
        }
        Ok(())
    }

    /// Keep a new object (durably if it is a token object) and give it a handle.
    fn add_object(
        &self,
        session: CK_SESSION_HANDLE,
        uid: Uuid,
        attrs: Attributes,
        material: Option<crate::hsm::crypto::KeyMaterial>,
    ) -> Result<CK_OBJECT_HANDLE> {
        let token = attrs.flag(CKA_TOKEN);
        self.keystore
            .cluster
            .put_object(uid, attrs.encode()?, material, token)?;
        let obj = Object::new(uid, attrs, if token { None } else { Some(session) });
        Ok(self.objects.write().insert(obj))
    }

    /// Generate a key (a token key inside one instance, replicated; a session key in
    /// this process) whose attributes `attrs_of` gives from its public half, and give it
    /// a handle. Returns the public half of a pair.
    pub(crate) fn add_generated(
        &self,
        session: CK_SESSION_HANDLE,
        uid: uuid::Uuid,
        spec: &crate::hsm::KeySpec,
        attrs_of: &dyn Fn(Option<&crate::hsm::crypto::KeyMaterial>) -> Result<Attributes>,
    ) -> Result<(CK_OBJECT_HANDLE, Option<crate::hsm::crypto::KeyMaterial>)> {
        let token = attrs_of(None)?.flag(CKA_TOKEN);
        if !token {
            let (material, public) = spec.generate()?;
            let attrs = attrs_of(public.as_ref())?;
            return Ok((
                self.add_object(session, uid, attrs, Some(material))?,
                public,
            ));
        }
        let public = self
            .keystore
            .cluster
            .generate(uid, spec, &|p| attrs_of(p)?.encode())?;
        let attrs = attrs_of(public.as_ref())?;
        let obj = Object::new(uid, attrs, None);
        Ok((self.objects.write().insert(obj), public))
    }

    pub fn get_attributes(
        &self,
        h: CK_SESSION_HANDLE,
        oh: CK_OBJECT_HANDLE,
        types: &[AttrType],
    ) -> Result<Vec<AttrValue>> {
        self.session(h)?;
        let obj = self.object(oh)?;
        types
            .iter()
            .map(|&t| {
                if let Some(v) = self.vendor_attribute(&obj, t)? {
                    return Ok(v);
                }
                Ok(match policy::read(&obj.attrs, t) {
                    Readable::Value(v) => AttrValue::Value(v.to_vec()),
                    Readable::Empty => AttrValue::Value(Vec::new()),
                    Readable::Sensitive => AttrValue::Sensitive,
                    Readable::Invalid => AttrValue::Invalid,
                    Readable::Material => {
                        match keys::material_component(&self.keystore, &obj, t)? {
                            Some(v) => AttrValue::Value(v),
                            None => AttrValue::Invalid,
                        }
                    }
                })
            })
            .collect()
    }

    /// The CMK attributes of include/cks_pkcs11.h, computed from the key's metadata
    /// so that state changes show at once.
    fn vendor_attribute(&self, obj: &Object, t: AttrType) -> Result<Option<AttrValue>> {
        use policy::*;
        if !(CKA_CKS_ARN..=CKA_CKS_DELETION_DATE).contains(&t) {
            return Ok(None);
        }
        let Some((cmk, version)) = self.keystore.cmk_of(obj.uid)? else {
            return Ok(if policy::is_known(obj.attrs.class(), t) {
                Some(AttrValue::Value(Vec::new()))
            } else {
                None
            });
        };
        let text = |s: String| Some(AttrValue::Value(s.into_bytes()));
        Ok(match t {
            CKA_CKS_ARN => text(cmk.arn(&self.keystore.keystore_id())),
            CKA_CKS_KEY_STATE => {
                let code = if self.keystore.is_connected() {
                    cmk.state.code()
                } else {
                    crate::kms::STATE_UNAVAILABLE
                };
                Some(AttrValue::Value(attribute::ulong_bytes(code)))
            }
            CKA_CKS_KEY_SPEC => text(cmk.spec),
            CKA_CKS_KEY_USAGE => text(cmk.usage),
            CKA_CKS_KEY_VERSION => Some(AttrValue::Value(attribute::ulong_bytes(
                version as CK_ULONG,
            ))),
            CKA_CKS_CREATION_DATE => text(crate::kms::rfc3339(cmk.created)),
            _ => text(
                cmk.deletion_date
                    .map(crate::kms::rfc3339)
                    .unwrap_or_default(),
            ),
        })
    }

    pub fn set_attributes(
        &self,
        h: CK_SESSION_HANDLE,
        oh: CK_OBJECT_HANDLE,
        template: &Template,
    ) -> Result<()> {
        let s = self.session(h)?;
        let obj = self.object(oh)?;
        self.check_writable(&s.lock(), obj.is_token(), false)?;
        let next = policy::modify(&obj.attrs, template, self.login_state() == Login::So)?;
        if obj.is_token() {
            self.keystore
                .cluster
                .update_attrs(obj.uid, &next.encode()?)?;
        }
        self.objects.write().set_attrs(oh, next);
        Ok(())
    }

    /// `C_DestroyObject`. On a customer master key this schedules its deletion with the
    /// default waiting period (the object stays, unusable, until the deletion is due or
    /// cancelled), as a KMS would; other objects go at once.
    pub fn destroy_object(&self, h: CK_SESSION_HANDLE, oh: CK_OBJECT_HANDLE) -> Result<()> {
        let s = self.session(h)?;
        let obj = self.object(oh)?;
        self.check_writable(&s.lock(), obj.is_token(), false)?;
        if obj.attrs.get(CKA_DESTROYABLE).is_some() && !obj.attrs.flag(CKA_DESTROYABLE) {
            return Err(Error::new(
                CKR_ACTION_PROHIBITED,
                "object is not destroyable",
            ));
        }
        if obj.is_token() {
            if let Some((cmk, _)) = self.keystore.cmk_of(obj.uid)? {
                if cmk.state != crate::kms::KeyState::PendingDeletion {
                    self.keystore.schedule_deletion(&cmk.id.to_string(), None)?;
                }
                tracing::info!(key = %cmk.id, "C_DestroyObject on a key: deletion scheduled");
                return Ok(());
            }
        }
        self.keystore.destroy(obj.uid, obj.is_token())?;
        self.objects.write().remove(oh);
        tracing::info!(uid = %obj.uid, token = obj.is_token(), "object destroyed");
        Ok(())
    }

    /// Remove an object at once, whatever it is (undoing a half-made creation).
    pub(crate) fn discard(&self, oh: CK_OBJECT_HANDLE) {
        if let Some(obj) = self.objects.write().remove(oh) {
            let _ = self.keystore.destroy(obj.uid, obj.is_token());
        }
    }

    pub fn object_size(&self, h: CK_SESSION_HANDLE, oh: CK_OBJECT_HANDLE) -> Result<usize> {
        self.session(h)?;
        let obj = self.object(oh)?;
        Ok(obj.attrs.iter().map(|(_, v)| v.len() + 16).sum())
    }

    pub fn find_init(&self, h: CK_SESSION_HANDLE, template: &Template) -> Result<()> {
        let s = self.session(h)?;
        if s.lock().find.is_some() {
            return Err(Error::new(
                CKR_OPERATION_ACTIVE,
                "a search is already active",
            ));
        }
        self.sync_objects()?;
        let user = self.login_state() == Login::User;
        // A template naming CKA_LABEL or CKA_ID is a look-up in the table's index,
        // not a scan of every object.
        let (mut found, uids): (Vec<CK_OBJECT_HANDLE>, Vec<Uuid>) = self
            .objects
            .read()
            .matching(template)
            .filter(|(_, o)| user || !o.is_private())
            .map(|(h, o)| (h, o.uid))
            .unzip();
        if found.len() > 1 {
            // The current version of a rotated key before its older versions (same
            // CKA_ID): pkcs11-tool, libp11 and Java use the first match.
            let older = self.keystore.older_versions(&uids)?;
            let mut ranked: Vec<(bool, CK_OBJECT_HANDLE)> = older.into_iter().zip(found).collect();
            ranked.sort_unstable();
            found = ranked.into_iter().map(|(_, h)| h).collect();
        }
        s.lock().find = Some(found.into());
        Ok(())
    }

    pub fn find_next(&self, h: CK_SESSION_HANDLE, max: usize) -> Result<Vec<CK_OBJECT_HANDLE>> {
        let s = self.session(h)?;
        let mut s = s.lock();
        let q = s
            .find
            .as_mut()
            .ok_or_else(|| Error::new(CKR_OPERATION_NOT_INITIALIZED, "no active search"))?;
        let n = max.min(q.len());
        Ok(q.drain(..n).collect())
    }

    pub fn find_final(&self, h: CK_SESSION_HANDLE) -> Result<()> {
        let s = self.session(h)?;
        let mut s = s.lock();
        if s.find.take().is_none() {
            return Err(Error::new(
                CKR_OPERATION_NOT_INITIALIZED,
                "no active search",
            ));
        }
        Ok(())
    }
}

fn pin_flags(
    st: crate::hsm::embedded::PinStatus,
    max: u32,
    low: CK_FLAGS,
    final_try: CK_FLAGS,
    locked: CK_FLAGS,
) -> CK_FLAGS {
    if st.locked {
        locked
    } else if st.failures > 0 && st.failures + 1 == max {
        final_try | low
    } else if st.failures > 0 {
        low
    } else {
        0
    }
}

fn check_pin_len(pin: &[u8]) -> Result<()> {
    if pin.len() < MIN_PIN_LEN || pin.len() > MAX_PIN_LEN {
        return Err(Error::new(
            CKR_PIN_LEN_RANGE,
            format!("PIN must be {MIN_PIN_LEN} to {MAX_PIN_LEN} bytes"),
        ));
    }
    Ok(())
}
