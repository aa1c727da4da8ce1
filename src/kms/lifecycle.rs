//! The lifecycle of customer master keys: create (registration of keys the token
//! generated), enable/disable, aliases, rotation, deletion windows and purge, and the
//! key store's connect/disconnect switch. State changes reach running processes
//! within a second: the hot path re-reads the records when the store changed, at most
//! twice a second.

use super::{check_alias, now, Cmk, KeyState, Registry, Version};
use crate::audit::ops;
use crate::cluster::Member;
use crate::error::{Error, Result};
use crate::hsm::AnyInstance;
use crate::keystore::KeyStore;
use crate::token::attribute::Attributes;
use parking_lot::Mutex;
use pkcs11_sys::*;
use rustc_hash::FxHashMap;
use serde::Serialize;
use std::sync::Arc;
use std::time::{Duration, Instant};
use uuid::Uuid;

const REFRESH: Duration = Duration::from_millis(500);
const META_DISCONNECTED: &str = "disconnected";

/// What a caller wants to do with a key (older versions only decrypt and verify).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Use {
    Protect,
    Unprotect,
}

#[derive(Default)]
pub struct KmsState {
    /// Replaced as a whole on change, read on every key use: a snapshot, no shared lock.
    registry: arc_swap::ArcSwap<Registry>,
    /// When the records were last compared with the store, and the store's version then.
    checked: Mutex<Option<(Instant, i64)>>,
    /// The same moment for the lock-free fast path (`Fresh::is_fresh`).
    checked_fresh: Fresh,
    connected: Mutex<Option<(Instant, bool)>>,
    connected_fresh: Fresh,
    connected_now: std::sync::atomic::AtomicBool,
}

/// A timestamp readable without a lock, so that the per-call "is the cached view less
/// than 500 ms old?" check costs no shared lock on the hot path.
#[derive(Default)]
struct Fresh(std::sync::atomic::AtomicU64);

/// Milliseconds on the coarse monotonic clock (+1 so that 0 keeps meaning "never"). The
/// coarse clock reads a value the kernel updates every tick, without the TSC: a few
/// nanoseconds on the per-call path, and a tick (1–10 ms) is ample for a 500 ms freshness.
fn millis_since_start() -> u64 {
    let t = rustix::time::clock_gettime(rustix::time::ClockId::MonotonicCoarse);
    (t.tv_sec as u64)
        .saturating_mul(1000)
        .saturating_add(t.tv_nsec as u64 / 1_000_000)
        + 1
}

impl Fresh {
    fn is_fresh(&self) -> bool {
        let at = self.0.load(std::sync::atomic::Ordering::Relaxed);
        at != 0 && millis_since_start().saturating_sub(at) < REFRESH.as_millis() as u64
    }

    fn touch(&self) {
        self.0
            .store(millis_since_start(), std::sync::atomic::Ordering::Relaxed);
    }
}

/// Proof that a purge removed the material everywhere: each instance asked afterwards.
#[derive(Serialize, Debug, Clone)]
pub struct PurgeProof {
    pub key_id: Uuid,
    pub objects: Vec<Uuid>,
    pub instances: Vec<InstanceProof>,
    pub complete: bool,
}

#[derive(Serialize, Debug, Clone)]
pub struct InstanceProof {
    pub instance: String,
    /// Objects of the key the instance still holds (must be none).
    pub remaining: usize,
    pub metadata_remaining: bool,
    pub checked_at: String,
    pub error: Option<String>,
}

fn not_found(name: &str) -> Error {
    Error::new(
        CKR_ARGUMENTS_BAD,
        format!("no key {name:?} (give a key id, ARN or alias)"),
    )
}

impl KeyStore {
    /// The key store id that ARNs carry: the token's serial number.
    pub fn keystore_id(&self) -> String {
        self.token_record()
            .ok()
            .flatten()
            .map(|r| r.serial)
            .unwrap_or_default()
    }

    /// Re-read key metadata if the store changed (checked at most every 500 ms unless forced).
    pub fn refresh_cmks(&self, force: bool) -> Result<()> {
        self.refresh(force, force)
    }

    /// Compare with the store now, and re-read key metadata only if it changed.
    pub fn refresh_cmks_if_changed(&self) -> Result<()> {
        self.refresh(true, false)
    }

    /// `skip_timer`: compare with the store now rather than at most every 500 ms;
    /// `force`: re-read even if the store did not change.
    fn refresh(&self, skip_timer: bool, force: bool) -> Result<()> {
        if !skip_timer && self.kms.checked_fresh.is_fresh() {
            return Ok(());
        }
        let mut checked = self.kms.checked.lock();
        if !skip_timer {
            if let Some((at, _)) = *checked {
                if at.elapsed() < REFRESH {
                    return Ok(());
                }
            }
        }
        let version = self.cluster.data_version()?;
        if !force && checked.is_some_and(|(_, v)| v == version) {
            *checked = Some((Instant::now(), version));
            self.kms.checked_fresh.touch();
            return Ok(());
        }
        self.kms
            .registry
            .store(std::sync::Arc::new(self.load_registry()?));
        *checked = Some((Instant::now(), version));
        self.kms.checked_fresh.touch();
        Ok(())
    }

    /// The key records of the healthy members, each decoded once: for every key the
    /// highest generation any member holds.
    ///
    /// With records in memory already, only each member's list of (id, generation) is
    /// read, and only the records that changed are fetched and decoded: a change by
    /// another process costs every process a few lists, not all records again.
    fn load_registry(&self) -> Result<Registry> {
        let base = self.kms.registry.load_full();
        if base.is_empty() {
            return self.load_registry_in_full();
        }
        let sources = self.record_sources();
        // For every key, the highest generation and the first member that holds it.
        let mut best: FxHashMap<Uuid, (u64, usize)> = FxHashMap::default();
        let mut read_any = false;
        for (n, (m, i)) in sources.iter().enumerate() {
            match i.cmk_generations() {
                Ok(gens) => {
                    read_any = true;
                    best.reserve(gens.len());
                    for (id, g) in gens {
                        if best.get(&id).is_none_or(|(b, _)| *b < g) {
                            best.insert(id, (g, n));
                        }
                    }
                }
                Err(e) => m.set_healthy(false, &e.msg),
            }
        }
        if !read_any {
            return Err(Error::device("no healthy HSM instance"));
        }
        let mut changed: Vec<Vec<Uuid>> = vec![Vec::new(); sources.len()];
        let mut n_changed = 0;
        for (id, (g, n)) in &best {
            if base.get(*id).map(|c| c.generation) != Some(*g) {
                changed[*n].push(*id);
                n_changed += 1;
            }
        }
        if n_changed > best.len() / 4 {
            // Mostly new: reading everything is cheaper than one look-up per record.
            return self.load_registry_in_full();
        }
        let mut next = Registry::clone(&base);
        let gone: Vec<Uuid> = base
            .cmks()
            .map(|c| c.id)
            .filter(|id| !best.contains_key(id))
            .collect();
        for id in gone {
            next.remove(id);
        }
        let mut damaged = Vec::new();
        for (ids, (m, i)) in changed.iter().zip(&sources) {
            if ids.is_empty() {
                continue;
            }
            match i.load_cmks_of(ids) {
                Ok(records) => {
                    for (id, g, meta) in records {
                        match Cmk::decode(&meta) {
                            Ok(c) => next.insert(c),
                            Err(e) => {
                                tracing::error!(key = %id, generation = g, "unreadable key metadata, trying the other members: {e}");
                                damaged.push(id);
                            }
                        }
                    }
                }
                Err(e) => m.set_healthy(false, &e.msg),
            }
        }
        for c in readable_copies(&sources, &damaged) {
            next.insert(c);
        }
        Ok(next)
    }

    /// The healthy members that answer, in configuration order.
    fn record_sources(&self) -> Vec<(&Arc<Member>, Arc<AnyInstance>)> {
        let mut sources = Vec::new();
        for m in self.cluster.members().iter().filter(|m| m.is_healthy()) {
            match m.instance() {
                Ok(i) => sources.push((m, i)),
                Err(e) => m.set_healthy(false, &e.msg),
            }
        }
        sources
    }

    /// Every record, read afresh. The first healthy member's records are read in full;
    /// of the others only each record's id and generation, and the few records that are
    /// newer there (or only there) are fetched. A record that does not decode gives way
    /// to another member's copy: one damaged copy must not hide a key (its objects would
    /// then look like the remains of an interrupted creation).
    fn load_registry_in_full(&self) -> Result<Registry> {
        let sources = self.record_sources();
        let mut records: Vec<(Uuid, u64, Vec<u8>)> = Vec::new();
        let mut at: FxHashMap<Uuid, usize> = FxHashMap::default();
        let mut read_any = false;
        for (m, i) in &sources {
            let r = if !read_any {
                i.load_cmks().map(|all| {
                    records = all;
                    at.reserve(records.len());
                    at.extend(records.iter().enumerate().map(|(n, r)| (r.0, n)));
                    read_any = true;
                })
            } else {
                i.cmk_generations().and_then(|gens| {
                    let newer: Vec<Uuid> = gens
                        .into_iter()
                        .filter(|(id, g)| at.get(id).is_none_or(|&n| records[n].1 < *g))
                        .map(|(id, _)| id)
                        .collect();
                    if newer.is_empty() {
                        return Ok(());
                    }
                    for (id, g, meta) in i.load_cmks_of(&newer)? {
                        match at.get(&id) {
                            Some(&n) if records[n].1 >= g => {}
                            Some(&n) => records[n] = (id, g, meta),
                            None => {
                                at.insert(id, records.len());
                                records.push((id, g, meta));
                            }
                        }
                    }
                    Ok(())
                })
            };
            if let Err(e) = r {
                m.set_healthy(false, &e.msg);
            }
        }
        if !read_any {
            return Err(Error::device("no healthy HSM instance"));
        }
        drop(at);
        let mut cmks = Vec::with_capacity(records.len());
        let mut damaged = Vec::new();
        for (id, g, meta) in records {
            match Cmk::decode(&meta) {
                Ok(c) => cmks.push(c),
                Err(e) => {
                    tracing::error!(key = %id, generation = g, "unreadable key metadata, trying the other members: {e}");
                    damaged.push(id);
                }
            }
        }
        cmks.extend(readable_copies(&sources, &damaged));
        Ok(Registry::from_records(cmks))
    }

    pub fn with_cmks<T>(&self, f: impl FnOnce(&Registry) -> T) -> Result<T> {
        self.refresh_cmks(false)?;
        Ok(f(&self.kms.registry.load()))
    }

    /// May this object be used for `what`? Objects that are no CMK pass (`None`);
    /// for a CMK, the version the object holds.
    pub fn check_use(&self, object: Uuid, what: Use) -> Result<Option<u32>> {
        self.refresh_cmks(false)?;
        let reg = self.kms.registry.load();
        let Some((cmk, version)) = reg.for_object(object) else {
            return Ok(None);
        };
        if cmk.state != KeyState::Enabled {
            tracing::warn!(key = %cmk.id, state = ?cmk.state, "key use refused: the key is not enabled");
            return Err(Error::new(
                CKR_KEY_FUNCTION_NOT_PERMITTED,
                format!("key {} is {:?}", cmk.id, cmk.state),
            ));
        }
        let latest = cmk.latest().map(|v| v.version).unwrap_or(version);
        if what == Use::Protect && version != latest {
            return Err(Error::new(
                CKR_KEY_FUNCTION_NOT_PERMITTED,
                format!("version {version} of key {} only decrypts and verifies; version {latest} is current", cmk.id),
            ));
        }
        Ok(Some(version))
    }

    /// The CMK (clone) and version an object belongs to.
    pub fn cmk_of(&self, object: Uuid) -> Result<Option<(Cmk, u32)>> {
        let lookup = |r: &Registry| r.for_object(object).map(|(c, v)| (c.clone(), v));
        if let Some(found) = self.with_cmks(lookup)? {
            return Ok(Some(found));
        }
        // The object may be newer than the records read (a key or version another
        // process just made): look again if the store changed since.
        self.refresh(true, false)?;
        Ok(lookup(&self.kms.registry.load()))
    }

    /// For each object: does it hold an older version of its key? (Searches list the
    /// current version first: tools take the first of several keys with one `CKA_ID`.)
    pub fn older_versions(&self, objects: &[Uuid]) -> Result<Vec<bool>> {
        // Compare with the store now: a version another process just added must count.
        self.refresh(true, false)?;
        let reg = self.kms.registry.load();
        Ok(objects
            .iter()
            .map(|o| {
                reg.for_object(*o)
                    .is_some_and(|(c, v)| c.latest().is_some_and(|l| l.version != v))
            })
            .collect())
    }

    pub fn resolve(&self, name: &str) -> Result<Cmk> {
        self.with_cmks(|r| r.resolve(name).cloned())?
            .ok_or_else(|| not_found(name))
    }

    /// Write a changed record (generation + 1) to a majority of instances.
    pub fn save_cmk(&self, mut cmk: Cmk) -> Result<Cmk> {
        cmk.generation += 1;
        // Held across the write and the registry update: a refresh that read the records
        // before this write must not store its registry after the update (the key would
        // vanish, or an old state return, until the next refresh).
        let _refresh = self.kms.checked.lock();
        self.cluster
            .put_cmk(cmk.id, cmk.generation, &cmk.encode()?)?;
        self.kms.registry.rcu(|r| {
            let mut r = Registry::clone(r);
            r.insert(cmk.clone());
            r
        });
        Ok(cmk)
    }

    /// A key the token just generated becomes a CMK (version 1).
    #[allow(clippy::too_many_arguments)]
    pub fn register_cmk(
        &self,
        id: Uuid,
        object: Uuid,
        public_object: Option<Uuid>,
        spec: String,
        usage: String,
        alias: Option<String>,
        description: String,
    ) -> Result<Cmk> {
        // Compare with the store now (an alias another process just took must count),
        // but re-read the records only if the store changed: this process's own
        // writes are in the registry already (`save_cmk`), and a full re-read per
        // new key would make creating n keys cost n² decodes.
        self.refresh(true, false)?;
        let mut aliases = Vec::new();
        if let Some(a) = alias {
            match (check_alias(&a), self.kms.registry.load().alias_owner(&a)) {
                (Ok(()), None) => aliases.push(a),
                (Ok(()), Some(owner)) => {
                    tracing::info!(alias = %a, owner = %owner, "alias already in use; the new key has none")
                }
                (Err(_), _) => {}
            }
        }
        let t = now();
        let cmk = Cmk {
            id,
            generation: 0,
            aliases,
            description,
            spec,
            usage,
            state: KeyState::Enabled,
            created: t,
            deletion_date: None,
            rotation_days: None,
            versions: vec![Version {
                version: 1,
                object,
                public_object,
                created: t,
            }],
        };
        let saved = self.save_cmk(cmk)?;
        self.audit_admin(
            ops::KEY_CREATE,
            "CKR_OK",
            Some(saved.id),
            Some(format!(
                "{} {} aliases {:?}",
                saved.spec, saved.usage, saved.aliases
            )),
            None,
        )?;
        Ok(saved)
    }

    fn change(
        &self,
        op: &'static str,
        name: &str,
        f: impl FnOnce(&mut Cmk) -> Result<()>,
    ) -> Result<Cmk> {
        self.refresh_cmks(true)?;
        let mut cmk = self.resolve(name)?;
        if let Err(e) = f(&mut cmk) {
            let _ = self.audit_admin(
                op,
                crate::error::rv_name(e.rv),
                Some(cmk.id),
                Some(e.msg.to_string()),
                None,
            );
            return Err(e);
        }
        let saved = self.save_cmk(cmk)?;
        tracing::info!(key = %saved.id, state = ?saved.state, generation = saved.generation, "key changed");
        self.audit_admin(
            op,
            "CKR_OK",
            Some(saved.id),
            Some(format!(
                "state {:?}, aliases {:?}, generation {}",
                saved.state, saved.aliases, saved.generation
            )),
            None,
        )?;
        Ok(saved)
    }

    pub fn enable(&self, name: &str) -> Result<Cmk> {
        self.change(ops::KEY_STATE, name, |c| match c.state {
            KeyState::PendingDeletion => Err(invalid_state(c, "cancel the deletion first")),
            _ => {
                c.state = KeyState::Enabled;
                Ok(())
            }
        })
    }

    pub fn disable(&self, name: &str) -> Result<Cmk> {
        self.change(ops::KEY_STATE, name, |c| match c.state {
            KeyState::PendingDeletion => Err(invalid_state(c, "the key is pending deletion")),
            _ => {
                c.state = KeyState::Disabled;
                Ok(())
            }
        })
    }

    /// Schedule deletion after `days` (within the configured window).
    pub fn schedule_deletion(&self, name: &str, days: Option<f64>) -> Result<Cmk> {
        let (min, default) = (self.pending_days.0, self.pending_days.1);
        let days = days.unwrap_or(default);
        if !(min..=30.0).contains(&days) {
            return Err(Error::new(
                CKR_ARGUMENTS_BAD,
                format!("the waiting period must be {min} to 30 days"),
            ));
        }
        self.change(ops::KEY_DELETE, name, |c| {
            if c.state == KeyState::PendingDeletion {
                return Err(invalid_state(c, "deletion is already scheduled"));
            }
            c.state = KeyState::PendingDeletion;
            c.deletion_date = Some(now() + (days * 86_400.0).ceil() as i64);
            Ok(())
        })
    }

    /// Cancel a scheduled deletion; as in KMS the key comes back disabled.
    pub fn cancel_deletion(&self, name: &str) -> Result<Cmk> {
        self.change(ops::KEY_STATE, name, |c| {
            if c.state != KeyState::PendingDeletion {
                return Err(invalid_state(c, "no deletion is scheduled"));
            }
            c.state = KeyState::Disabled;
            c.deletion_date = None;
            Ok(())
        })
    }

    /// Point `alias` at the key named `name` (moving it if another key had it).
    pub fn set_alias(&self, name: &str, alias: &str) -> Result<Cmk> {
        check_alias(alias)?;
        self.refresh_cmks(true)?;
        let target = self.resolve(name)?;
        if let Some(owner) = self.with_cmks(|r| r.alias_owner(alias))? {
            if owner == target.id {
                return Ok(target);
            }
            self.change(ops::KEY_STATE, &owner.to_string(), |c| {
                c.aliases.retain(|a| a != alias);
                Ok(())
            })?;
        }
        self.change(ops::KEY_STATE, &target.id.to_string(), |c| {
            c.aliases.push(alias.to_string());
            Ok(())
        })
    }

    pub fn remove_alias(&self, alias: &str) -> Result<Cmk> {
        self.change(ops::KEY_STATE, alias, |c| {
            c.aliases.retain(|a| a != alias);
            Ok(())
        })
    }

    pub fn set_description(&self, name: &str, description: &str) -> Result<Cmk> {
        self.change(ops::KEY_STATE, name, |c| {
            c.description = description.to_string();
            Ok(())
        })
    }

    pub fn set_rotation(&self, name: &str, days: Option<u32>) -> Result<Cmk> {
        self.change(ops::KEY_STATE, name, |c| {
            c.rotation_days = days;
            Ok(())
        })
    }

    /// Add a version: new material of the same kind, new objects with the same
    /// attributes; older versions keep decrypting and verifying. Needs the user logged in.
    pub fn rotate(&self, name: &str) -> Result<Cmk> {
        self.refresh_cmks(true)?;
        let cmk = self.resolve(name)?;
        if cmk.state != KeyState::Enabled {
            return Err(invalid_state(&cmk, "only enabled keys rotate"));
        }
        let latest = cmk
            .latest()
            .cloned()
            .ok_or_else(|| Error::general("key has no version"))?;
        let version = latest.version + 1;
        let object = Uuid::new_v4();
        let (old, _) = self.cluster.run(|i| i.export(latest.object))?;
        let attrs = Attributes::decode(&old.attrs)?;
        let spec = spec_of(&attrs)?;
        let public = self.cluster.generate(object, &spec, &|p| {
            let mut a = attrs.clone();
            if let Some(p) = p {
                crate::token::keys::public_attrs(&mut a, p, CKO_PRIVATE_KEY);
            }
            a.encode()
        })?;
        let mut public_object = None;
        if let (Some(pub_uid), Some(pm)) = (latest.public_object, public) {
            let (p, _) = self.cluster.run(|i| i.export(pub_uid))?;
            let mut pattrs = Attributes::decode(&p.attrs)?;
            crate::token::keys::public_attrs(&mut pattrs, &pm, CKO_PUBLIC_KEY);
            let uid = Uuid::new_v4();
            self.cluster
                .put_object(uid, pattrs.encode()?, Some(pm), true)?;
            public_object = Some(uid);
        }
        // Older versions step aside: the label names the current version only.
        for uid in std::iter::once(latest.object).chain(latest.public_object) {
            let (o, _) = self.cluster.run(|i| i.export(uid))?;
            let mut a = Attributes::decode(&o.attrs)?;
            let label = String::from_utf8_lossy(a.get(CKA_LABEL).unwrap_or_default()).to_string();
            a.set(
                CKA_LABEL,
                format!("{label}#v{}", latest.version).into_bytes(),
            );
            self.cluster.update_attrs(uid, &a.encode()?)?;
        }
        let saved = self.change(ops::KEY_ROTATE, &cmk.id.to_string(), |c| {
            c.versions.push(Version {
                version,
                object,
                public_object,
                created: now(),
            });
            Ok(())
        })?;
        tracing::info!(key = %cmk.id, version, "key rotated");
        Ok(saved)
    }

    /// Destroy every version's material on every instance, then ask each instance
    /// whether anything is left. The key's record goes too.
    pub fn purge(&self, name: &str) -> Result<PurgeProof> {
        self.refresh_cmks(true)?;
        let cmk = self.resolve(name)?;
        let objects: Vec<Uuid> = cmk.objects().collect();
        for uid in &objects {
            self.destroy(*uid, true)?;
        }
        self.store_tombstone(cmk.id)?;
        {
            let _refresh = self.kms.checked.lock(); // as in `save_cmk`
            self.cluster.delete_cmk(cmk.id)?;
            self.kms.registry.rcu(|r| {
                let mut r = Registry::clone(r);
                r.remove(cmk.id);
                r
            });
        }
        let instances: Vec<InstanceProof> = self
            .cluster
            .members()
            .iter()
            .map(|m| {
                let checked_at = super::rfc3339(now());
                match m.instance().and_then(|i| {
                    let mut remaining = 0;
                    for uid in &objects {
                        remaining += i.has_object(*uid)? as usize;
                    }
                    let meta = i.load_cmks()?.iter().any(|(id, _, _)| *id == cmk.id);
                    Ok((remaining, meta))
                }) {
                    Ok((remaining, metadata_remaining)) => InstanceProof {
                        instance: m.id.clone(),
                        remaining,
                        metadata_remaining,
                        checked_at,
                        error: None,
                    },
                    Err(e) => InstanceProof {
                        instance: m.id.clone(),
                        remaining: 0,
                        metadata_remaining: false,
                        checked_at,
                        error: Some(format!("{e}; it will be purged when it returns")),
                    },
                }
            })
            .collect();
        let complete = instances
            .iter()
            .all(|p| p.error.is_none() && p.remaining == 0 && !p.metadata_remaining);
        tracing::info!(key = %cmk.id, complete, "key purged");
        Ok(PurgeProof {
            key_id: cmk.id,
            objects,
            instances,
            complete,
        })
    }

    /// Deletions that are due, and automatic rotations (when logged in).
    pub fn run_due(&self) -> Vec<PurgeProof> {
        if self.refresh_cmks(false).is_err() {
            return Vec::new();
        }
        let t = now();
        let (due, rotate): (Vec<Uuid>, Vec<Uuid>) = {
            let reg = self.kms.registry.load();
            let due = reg
                .cmks()
                .filter(|c| {
                    c.state == KeyState::PendingDeletion && c.deletion_date.is_some_and(|d| d <= t)
                })
                .map(|c| c.id)
                .collect();
            let rotate = reg
                .cmks()
                .filter(|c| c.state == KeyState::Enabled)
                .filter(|c| match (c.rotation_days, c.latest()) {
                    (Some(d), Some(v)) => v.created + i64::from(d) * 86_400 <= t,
                    _ => false,
                })
                .map(|c| c.id)
                .collect();
            (due, rotate)
        };
        let mut proofs = Vec::new();
        for id in due {
            match self.purge(&id.to_string()) {
                Ok(p) => proofs.push(p),
                Err(e) => tracing::warn!(key = %id, "scheduled deletion failed, will retry: {e}"),
            }
        }
        if self.is_unlocked() {
            for id in rotate {
                if let Err(e) = self.rotate(&id.to_string()) {
                    tracing::warn!(key = %id, "automatic rotation failed: {e}");
                }
            }
        }
        proofs
    }

    /// Connect or disconnect the key store for every process (key material untouched).
    pub fn set_connected(&self, connected: bool) -> Result<()> {
        self.store_meta(META_DISCONNECTED, if connected { b"0" } else { b"1" })?;
        *self.kms.connected.lock() = Some((Instant::now(), connected));
        self.kms
            .connected_now
            .store(connected, std::sync::atomic::Ordering::Relaxed);
        self.kms.connected_fresh.touch();
        self.audit_admin(
            if connected {
                ops::CONNECT
            } else {
                ops::DISCONNECT
            },
            "CKR_OK",
            None,
            None,
            None,
        )?;
        tracing::info!(connected, "key store connection changed");
        Ok(())
    }

    /// Whether the key store is connected (re-read at most every 500 ms).
    pub fn is_connected(&self) -> bool {
        if self.kms.connected_fresh.is_fresh() {
            return self
                .kms
                .connected_now
                .load(std::sync::atomic::Ordering::Relaxed);
        }
        let mut c = self.kms.connected.lock();
        if let Some((at, v)) = *c {
            if at.elapsed() < REFRESH {
                return v;
            }
        }
        let v = !matches!(self.read_meta(META_DISCONNECTED), Ok(Some(x)) if x == b"1");
        *c = Some((Instant::now(), v));
        self.kms
            .connected_now
            .store(v, std::sync::atomic::Ordering::Relaxed);
        self.kms.connected_fresh.touch();
        v
    }
}

/// For each of the keys `ids`, the highest generation of its record that decodes on any
/// of `sources` (keys whose chosen record is damaged).
fn readable_copies(sources: &[(&Arc<Member>, Arc<AnyInstance>)], ids: &[Uuid]) -> Vec<Cmk> {
    if ids.is_empty() {
        return Vec::new();
    }
    let mut good: FxHashMap<Uuid, Cmk> = FxHashMap::default();
    for (_, i) in sources {
        for (_, _, meta) in i.load_cmks_of(ids).unwrap_or_default() {
            if let Ok(c) = Cmk::decode(&meta) {
                if good.get(&c.id).is_none_or(|b| b.generation < c.generation) {
                    good.insert(c.id, c);
                }
            }
        }
    }
    for id in ids.iter().filter(|id| !good.contains_key(id)) {
        tracing::error!(key = %id, "no member holds a readable record of this key");
    }
    good.into_values().collect()
}

fn invalid_state(c: &Cmk, why: &str) -> Error {
    Error::new(
        CKR_FUNCTION_FAILED,
        format!("key {} is {:?}: {why}", c.id, c.state),
    )
}

/// What to generate for a new version of a key with these attributes.
fn spec_of(attrs: &Attributes) -> Result<crate::hsm::KeySpec> {
    use crate::hsm::KeySpec;
    let len = attrs.ulong(CKA_VALUE_LEN).unwrap_or(32) as usize;
    Ok(match attrs.key_type() {
        Some(CKK_AES) => KeySpec::Aes(len),
        Some(CKK_EC) => KeySpec::Ec(crate::token::keys::curve_from_params(
            attrs.get(CKA_EC_PARAMS).unwrap_or_default(),
        )?),
        Some(CKK_RSA) => KeySpec::Rsa {
            bits: attrs.get(CKA_MODULUS).map(|n| n.len() * 8).unwrap_or(2048),
            public_exponent: attrs.get(CKA_PUBLIC_EXPONENT).unwrap_or_default().to_vec(),
        },
        Some(CKK_GENERIC_SECRET) => KeySpec::GenericSecret(len),
        _ => return Err(Error::general("not a rotatable key")),
    })
}
