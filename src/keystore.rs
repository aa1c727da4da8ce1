//! The key store: one token over one cluster. It owns the token's identity and PINs
//! (`keystore.db` in the key store's directory), the key store key that the PINs seal
//! and that in turn seals every instance's key, and the repair of members that missed
//! changes.

use crate::audit::{ops, AuditLog, Event};
use crate::cluster::{metrics, Cluster, Member};
use crate::config::{Config, KdfConfig};
use crate::error::{Error, Result};
use crate::hsm::crypto;
use crate::hsm::embedded::seal::{InstanceKey, PinSeal};
use crate::hsm::embedded::store::Store;
use crate::hsm::embedded::{PinStatus, PinUser, TokenRecord};
use crate::token::attribute::Attributes;
use parking_lot::{Mutex, RwLock};
use pkcs11_sys::*;
use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;
use uuid::Uuid;
use zeroize::Zeroizing;

pub struct KeyStore {
    store: Store,
    pub audit: Arc<AuditLog>,
    pub cluster: Cluster,
    kdf: KdfConfig,
    max_attempts: u32,
    /// The key store key, present while someone is logged in.
    key: RwLock<Option<InstanceKey>>,
    metrics_dir: PathBuf,
    /// Serialises repairs (background and on demand).
    repairing: Mutex<()>,
    pub(crate) kms: crate::kms::lifecycle::KmsState,
    /// Key objects seen without a key record, and since when.
    orphans: Mutex<std::collections::HashMap<Uuid, std::time::Instant>>,
    /// The store's data version at the last full pass of `collect_orphans`.
    orphans_checked: Mutex<Option<i64>>,
    /// (minimum, default) waiting period before a scheduled deletion, in days.
    pub(crate) pending_days: (f64, f64),
}

/// A token key object that must belong to a CMK: a secret or private key, or the
/// public half of a generated pair.
pub fn is_key_object(attrs: &Attributes) -> bool {
    match attrs.class() {
        CKO_SECRET_KEY | CKO_PRIVATE_KEY => true,
        CKO_PUBLIC_KEY => attrs.flag(CKA_LOCAL),
        _ => false,
    }
}

/// How long a key object without a key record is left alone before it counts as the
/// remains of an interrupted creation (another process may be creating it right now).
const ORPHAN_GRACE: Duration = Duration::from_secs(60);

/// What one repair did, for `cks hsm sync` and the log.
#[derive(Debug, Default, Clone, serde::Serialize)]
pub struct RepairReport {
    pub instance: String,
    pub initialised: bool,
    pub copied: usize,
    pub deleted: usize,
    /// Objects whose attributes were brought up to date.
    pub updated: usize,
    pub error: Option<String>,
}

impl KeyStore {
    pub fn open(cfg: &Config) -> Result<KeyStore> {
        let dir = cfg.data_dir();
        let mut audit_cfg = cfg.audit.clone();
        audit_cfg.dir = cfg.audit_dir();
        let audit = Arc::new(AuditLog::open(&audit_cfg).map_err(|e| {
            Error::new(
                CKR_FUNCTION_FAILED,
                format!(
                    "cannot open the audit log in {}: {e}",
                    audit_cfg.dir.display()
                ),
            )
        })?);
        let store = Store::open(&dir, "keystore.db")?;
        let cluster = Cluster::open(cfg, &audit)?;
        // A member whose directory was lost comes back empty: it serves nothing until
        // it has been repaired.
        if store.token()?.is_some() {
            for m in cluster.members() {
                if let Ok(false) = m.instance().and_then(|i| i.is_initialized()) {
                    m.set_healthy(false, "instance is empty: it needs repair");
                }
            }
        }
        Ok(KeyStore {
            store,
            cluster,
            audit,
            kdf: cfg.kdf,
            max_attempts: cfg.keystore.max_pin_attempts,
            key: RwLock::new(None),
            metrics_dir: dir.join("metrics"),
            repairing: Mutex::new(()),
            kms: Default::default(),
            orphans: Mutex::new(Default::default()),
            orphans_checked: Mutex::new(None),
            pending_days: (
                cfg.keystore.min_pending_days,
                cfg.keystore.default_pending_days,
            ),
        })
    }

    pub fn metrics_dir(&self) -> &std::path::Path {
        &self.metrics_dir
    }

    /// Record an administrative action. With `sync` durability a record that cannot be
    /// written fails the action.
    pub fn audit_admin(
        &self,
        op: &'static str,
        result: &'static str,
        key: Option<Uuid>,
        reason: Option<String>,
        detail: Option<serde_json::Value>,
    ) -> Result<()> {
        let mut e = Event::new(op, result);
        e.key_id = key.map(crate::audit::KeyRef::Id);
        e.reason = reason;
        e.detail = detail;
        self.audit.record(e).map_err(Error::from)
    }

    pub(crate) fn store_tombstone(&self, uid: Uuid) -> Result<()> {
        self.store.add_tombstone(uid)
    }

    /// Objects and keys deleted from the key store (an instance still holding one
    /// missed the deletion; its next repair applies it).
    pub fn tombstones(&self) -> Result<Vec<Uuid>> {
        self.store.tombstones()
    }

    pub(crate) fn store_meta(&self, k: &str, v: &[u8]) -> Result<()> {
        self.store.set_meta(k, v)
    }

    pub(crate) fn read_meta(&self, k: &str) -> Result<Option<Vec<u8>>> {
        self.store.meta(k)
    }

    /// Is someone logged in (the key store key in memory)?
    pub fn is_unlocked(&self) -> bool {
        self.key.read().is_some()
    }

    pub fn token_record(&self) -> Result<Option<TokenRecord>> {
        self.store.token()
    }

    pub fn max_attempts(&self) -> u32 {
        self.max_attempts
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

    /// Verify a PIN, counting failures across processes; returns the key store key.
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
            Some(k) => {
                if rec.failures != 0 {
                    self.store.reset_failures(user)?;
                }
                Ok(k)
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

    /// `C_InitToken`: a token already initialised needs its SO PIN. Every reachable
    /// member starts over with a fresh instance key and the new domain key.
    pub fn init_token(&self, so_pin: &[u8], label: &str) -> Result<()> {
        if self.store.token()?.is_some() {
            self.check_pin(PinUser::So, so_pin)?;
        }
        let key = InstanceKey::generate();
        let mut domain = Zeroizing::new([0u8; 32]);
        crypto::random_bytes(&mut domain[..]);
        let mut ok = 0;
        for m in self.cluster.members() {
            match m.instance().and_then(|i| i.initialize(&key, &domain[..])) {
                Ok(()) => {
                    ok += 1;
                    m.set_healthy(true, "initialised");
                }
                Err(e) => m.set_healthy(false, &e.msg),
            }
        }
        if ok == 0 {
            return Err(Error::device("no HSM instance could be initialised"));
        }
        let mut serial = [0u8; 8];
        crypto::random_bytes(&mut serial);
        self.store.init_token(
            label,
            &hex::encode(serial),
            &PinSeal::new(&key, so_pin, self.kdf)?,
        )?;
        *self.key.write() = None;
        for m in self.cluster.members() {
            if let Ok(i) = m.instance() {
                i.lock(&[]);
            }
        }
        Ok(())
    }

    pub fn login(&self, user: PinUser, pin: &[u8]) -> Result<()> {
        let key = self.check_pin(user, pin)?;
        *self.key.write() = Some(key.clone());
        let mut unlocked = 0;
        for m in self.cluster.members() {
            let r = m.instance().and_then(|i| match i.is_initialized()? {
                true => i.unlock(&key),
                false => Err(Error::device("instance is empty: it needs repair")),
            });
            match r {
                Ok(()) => unlocked += 1,
                Err(e) => m.set_healthy(false, &e.msg),
            }
        }
        if unlocked == 0 {
            *self.key.write() = None;
            return Err(Error::device("no HSM instance could be unlocked"));
        }
        // Members that missed changes (or are new and empty) are brought up to date now.
        self.repair_unhealthy();
        Ok(())
    }

    pub fn logout(&self, token_uids: &[Uuid]) {
        *self.key.write() = None;
        for m in self.cluster.members() {
            if let Ok(i) = m.instance() {
                i.lock(token_uids);
            }
        }
    }

    /// `C_InitPIN`, with the SO logged in.
    pub fn init_user_pin(&self, pin: &[u8]) -> Result<()> {
        let key = self
            .key
            .read()
            .clone()
            .ok_or_else(|| Error::new(CKR_USER_NOT_LOGGED_IN, "log in as SO"))?;
        self.store
            .set_pin(PinUser::User, &PinSeal::new(&key, pin, self.kdf)?)
    }

    pub fn set_pin(&self, user: PinUser, old: &[u8], new: &[u8]) -> Result<()> {
        let key = self.check_pin(user, old)?;
        self.store
            .set_pin(user, &PinSeal::new(&key, new, self.kdf)?)
    }

    pub fn destroy(&self, uid: Uuid, persistent: bool) -> Result<()> {
        if persistent {
            self.store.add_tombstone(uid)?;
        }
        self.cluster.destroy(uid, persistent)
    }

    /// Bring one member up to date: initialise it if it is new and empty, copy in the
    /// token objects it lacks (domain-wrapped), apply deletions it missed. Needs the
    /// key store key (someone logged in).
    pub fn repair(&self, target: &Member) -> RepairReport {
        let _g = self.repairing.lock();
        let mut report = RepairReport {
            instance: target.id.clone(),
            ..Default::default()
        };
        if let Err(e) = self.try_repair(target, &mut report) {
            report.error = Some(e.msg.to_string());
            target.set_healthy(false, &e.msg);
        } else {
            target.set_healthy(true, "repaired");
        }
        tracing::info!(instance = %report.instance, copied = report.copied, deleted = report.deleted, initialised = report.initialised, error = ?report.error, "repair");
        let mut e = Event::new(
            ops::INSTANCE_REPAIR,
            if report.error.is_none() {
                "CKR_OK"
            } else {
                "CKR_DEVICE_ERROR"
            },
        );
        e.instance = Some(target.name.into());
        e.detail = serde_json::to_value(&report).ok();
        e.reason = report.error.clone();
        if let Err(err) = self.audit.record(e) {
            tracing::error!("audit: {err}");
        }
        report
    }

    fn try_repair(&self, target: &Member, report: &mut RepairReport) -> Result<()> {
        let key = self.key.read().clone().ok_or_else(|| {
            Error::new(
                CKR_USER_NOT_LOGGED_IN,
                "repair needs a login (the key store key)",
            )
        })?;
        let t = target.instance()?;
        t.probe()?;
        let sources: Vec<_> = self
            .cluster
            .members()
            .iter()
            .filter(|m| m.id != target.id && m.is_healthy())
            .filter_map(|m| m.instance().ok())
            .filter(|i| i.is_unlocked())
            .collect();
        if !t.is_initialized()? {
            let src = sources
                .first()
                .ok_or_else(|| Error::device("no healthy member to copy the domain key from"))?;
            t.initialize(&key, &src.domain_key()?)?;
            report.initialised = true;
        } else if !t.is_unlocked() {
            t.unlock(&key)?;
        }
        let tombstones: HashSet<Uuid> = self.store.tombstones()?.into_iter().collect();
        // Key metadata: the newest record of every key (lower generations are ignored).
        for src in &sources {
            for (id, g, meta) in src.load_cmks()? {
                if !tombstones.contains(&id) {
                    t.put_cmk(id, g, &meta)?;
                }
            }
        }
        for (id, _, _) in t.load_cmks()? {
            if tombstones.contains(&id) {
                t.delete_cmk(id)?;
            }
        }
        let mut have: HashSet<Uuid> = t.object_ids()?.into_iter().collect();
        for uid in have.iter().filter(|u| tombstones.contains(u)) {
            t.destroy(*uid, true)?;
            report.deleted += 1;
        }
        have.retain(|u| !tombstones.contains(u));
        // Sources that can wrap under the domain key first; a copy that fails from one
        // source is tried from the next.
        let mut sources = sources;
        sources.sort_by_key(|i| (!i.can_export(), i.is_remote()));
        let mut failed: Option<Error> = None;
        for src in &sources {
            for uid in src.object_ids()? {
                if have.contains(&uid) || tombstones.contains(&uid) {
                    continue;
                }
                match crate::hsm::copy_object(src, &t, uid) {
                    Ok(()) => {
                        have.insert(uid);
                        report.copied += 1;
                    }
                    Err(e) if e.is_device_failure() => return Err(e),
                    Err(e) => failed = Some(e),
                }
            }
        }
        let missing = sources
            .iter()
            .filter_map(|s| s.object_ids().ok())
            .flatten()
            .any(|u| !have.contains(&u) && !tombstones.contains(&u));
        if let (true, Some(e)) = (missing, failed) {
            return Err(e);
        }
        // Attribute changes (C_SetAttributeValue) the member missed: the healthy
        // members' version wins (they took the change by majority).
        if let Some(src) = sources.first() {
            let current: std::collections::HashMap<Uuid, Vec<u8>> = src
                .load_objects()?
                .into_iter()
                .map(|o| (o.uid, o.attrs))
                .collect();
            for o in t.load_objects()? {
                if let Some(attrs) = current.get(&o.uid).filter(|a| **a != o.attrs) {
                    t.update_attrs(o.uid, attrs)?;
                    report.updated += 1;
                }
            }
        }
        Ok(())
    }

    /// Repair every member that is not healthy but answers its probe.
    pub fn repair_unhealthy(&self) -> Vec<RepairReport> {
        if self.key.read().is_none() {
            return Vec::new();
        }
        self.cluster
            .members()
            .iter()
            .filter(|m| !m.is_healthy())
            .filter(|m| m.instance().and_then(|i| i.probe()).is_ok())
            .map(|m| self.repair(m))
            .collect()
    }

    /// The token objects of the key store, as (uid, encoded attributes): every object
    /// that any healthy member holds, each once.
    ///
    /// Only the first healthy member is read in full (its attributes win where members
    /// differ, as they always did); of the others only the list of object ids is read,
    /// and the few objects the first lacks are fetched from them. With 100,000 keys,
    /// reading every member in full doubled the cost of a login.
    pub fn load_token_objects(&self) -> Result<Vec<(Uuid, Vec<u8>)>> {
        let mut out: Option<Vec<(Uuid, Vec<u8>)>> = None;
        let mut seen: HashSet<Uuid, rustc_hash::FxBuildHasher> = HashSet::default();
        for m in self.cluster.members().iter().filter(|m| m.is_healthy()) {
            let r = m.instance().and_then(|i| match &mut out {
                None => {
                    let all = i.load_attrs()?;
                    seen.reserve(all.len());
                    seen.extend(all.iter().map(|(u, _)| *u));
                    out = Some(all);
                    Ok(())
                }
                Some(out) => {
                    let missing: Vec<Uuid> = i
                        .object_ids()?
                        .into_iter()
                        .filter(|u| !seen.contains(u))
                        .collect();
                    if !missing.is_empty() {
                        tracing::debug!(instance = %m.id, n = missing.len(), "objects only on later members");
                        let found = i.load_attrs_of(&missing)?;
                        seen.extend(found.iter().map(|(u, _)| *u));
                        out.extend(found);
                    }
                    Ok(())
                }
            });
            if let Err(e) = r {
                m.set_healthy(false, &e.msg);
            }
        }
        out.ok_or_else(|| Error::device("no healthy HSM instance"))
    }

    /// The objects `uids` as the first healthy member holding a copy that decodes has
    /// them (for objects whose copy on the first member is damaged).
    pub fn readable_objects(&self, uids: &[Uuid]) -> Vec<(Uuid, Attributes)> {
        let mut left: Vec<Uuid> = uids.to_vec();
        let mut out = Vec::new();
        for m in self.cluster.members().iter().filter(|m| m.is_healthy()) {
            if left.is_empty() {
                break;
            }
            let Ok(copies) = m.instance().and_then(|i| i.load_attrs_of(&left)) else {
                continue;
            };
            for (uid, bytes) in copies {
                if let Ok(a) = Attributes::decode(&bytes) {
                    left.retain(|u| *u != uid);
                    out.push((uid, a));
                }
            }
        }
        for uid in left {
            tracing::error!(%uid, "skipping an object no member holds readable");
        }
        out
    }

    /// Remove the remains of interrupted key creations: key objects that have had no key
    /// record for longer than `ORPHAN_GRACE` (they were never shown to anyone).
    ///
    /// Runs every second, and does anything only when the store changed since the last
    /// pass (or a suspect's grace ran out). Even then it reads the members' lists of
    /// object ids, not the objects: only the objects that no key record names (objects
    /// that are no key, and orphans) are read and decoded. Another process's
    /// interrupted creation changes the store; this process's own failed creations are
    /// undone where they fail.
    pub fn collect_orphans(&self) {
        let Ok(version) = self.cluster.data_version() else {
            return;
        };
        {
            let orphans = self.orphans.lock();
            let due = orphans.values().any(|t| t.elapsed() >= ORPHAN_GRACE);
            if !due && *self.orphans_checked.lock() == Some(version) {
                return;
            }
        }
        let Ok(objects) = self.unregistered_objects() else {
            return;
        };
        *self.orphans_checked.lock() = Some(version);
        let mut orphans = self.orphans.lock();
        let mut still = std::collections::HashMap::new();
        for (uid, attrs) in objects {
            let Ok(attrs) = Attributes::decode(&attrs) else {
                continue;
            };
            if !attrs.flag(CKA_TOKEN) || !is_key_object(&attrs) {
                continue;
            }
            let since = orphans
                .get(&uid)
                .copied()
                .unwrap_or_else(std::time::Instant::now);
            if since.elapsed() >= ORPHAN_GRACE {
                tracing::warn!(object = %uid, "removing a key left by an interrupted creation");
                let _ = self.destroy(uid, true);
                let _ = self.audit_admin(
                    ops::KEY_DELETE,
                    "CKR_OK",
                    Some(uid),
                    Some("remains of an interrupted key creation removed".into()),
                    None,
                );
            } else {
                still.insert(uid, since);
            }
        }
        *orphans = still;
    }

    /// The objects of every healthy member that no key record names, as (uid, encoded
    /// attributes), with key records as new as the lists of objects read.
    fn unregistered_objects(&self) -> Result<Vec<(Uuid, Vec<u8>)>> {
        // An embedded member lists its object ids cheaply; another kind reads its
        // objects to list them anyway, so it is read once, in full.
        enum Listing {
            Ids(Vec<Uuid>),
            Full(Vec<(Uuid, Vec<u8>)>),
        }
        let mut lists = Vec::new();
        for m in self.cluster.members().iter().filter(|m| m.is_healthy()) {
            let listing = m.instance().and_then(|i| {
                Ok(match i.kind() {
                    "embedded" => (Listing::Ids(i.object_ids()?), i),
                    _ => (Listing::Full(i.load_attrs()?), i),
                })
            });
            match listing {
                Ok(l) => lists.push((m, l)),
                Err(e) => m.set_healthy(false, &e.msg),
            }
        }
        if lists.is_empty() {
            return Err(Error::device("no healthy HSM instance"));
        }
        self.refresh_cmks_if_changed()?;
        let mut out = Vec::new();
        let mut seen: HashSet<Uuid, rustc_hash::FxBuildHasher> = HashSet::default();
        self.with_cmks(|reg| {
            let wanted =
                |u: &Uuid, seen: &HashSet<Uuid, _>| !reg.names_object(*u) && !seen.contains(u);
            for (m, (listing, i)) in lists {
                let found = match listing {
                    Listing::Ids(ids) => {
                        let unnamed: Vec<Uuid> =
                            ids.into_iter().filter(|u| wanted(u, &seen)).collect();
                        if unnamed.is_empty() {
                            continue;
                        }
                        match i.load_attrs_of(&unnamed) {
                            Ok(found) => found,
                            Err(e) => {
                                m.set_healthy(false, &e.msg);
                                continue;
                            }
                        }
                    }
                    Listing::Full(all) => {
                        all.into_iter().filter(|(u, _)| wanted(u, &seen)).collect()
                    }
                };
                seen.extend(found.iter().map(|(u, _)| *u));
                out.extend(found);
            }
        })?;
        Ok(out)
    }

    /// `cks hsm sync`: repair every reachable member.
    pub fn sync_all(&self) -> Vec<RepairReport> {
        self.cluster
            .members()
            .iter()
            .map(|m| self.repair(m))
            .collect()
    }

    /// One round of background work: probe members, repair those that came back,
    /// publish counters.
    pub fn health_tick(&self) {
        for m in self.cluster.members() {
            if m.is_healthy() {
                if let Err(e) = m.instance().and_then(|i| i.probe()) {
                    m.set_healthy(false, &e.msg);
                }
            }
        }
        self.repair_unhealthy();
        self.run_due();
        self.collect_orphans();
        if let Err(e) = metrics::publish(&self.metrics_dir, &self.cluster) {
            tracing::debug!("cannot publish metrics: {e}");
        }
    }
}

/// The background thread of a process: health probes, repair and metrics, once a
/// second, until stopped.
pub struct HealthThread {
    stop: Arc<AtomicBool>,
    handle: Option<std::thread::JoinHandle<()>>,
}

impl HealthThread {
    pub fn start(ks: Weak<KeyStore>) -> Option<HealthThread> {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let handle = std::thread::Builder::new()
            .name("cks-health".into())
            .spawn(move || {
                while !flag.load(Ordering::Relaxed) {
                    match ks.upgrade() {
                        Some(ks) => ks.health_tick(),
                        None => return,
                    }
                    for _ in 0..10 {
                        if flag.load(Ordering::Relaxed) {
                            return;
                        }
                        std::thread::sleep(Duration::from_millis(100));
                    }
                }
            })
            .ok()?;
        Some(HealthThread {
            stop,
            handle: Some(handle),
        })
    }

    pub fn stop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

impl Drop for HealthThread {
    fn drop(&mut self) {
        self.stop();
    }
}
