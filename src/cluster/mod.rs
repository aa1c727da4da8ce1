//! The cluster: which HSM instance serves a call. Reads and crypto go to one healthy
//! member chosen by the balancing policy; a device-level failure marks the member
//! unhealthy and the call moves to another; writes of token objects go to every
//! healthy member and count once durable on `min_replicas`.

pub mod metrics;
mod replay;

use crate::config::{Balance, Config};
use crate::config::{HsmConfig, HsmKind};
use crate::error::{Error, Result};
use crate::hsm::crypto::KeyMaterial;
use crate::hsm::embedded::EmbeddedInstance;
use crate::hsm::pkcs11::Pkcs11Instance;
use crate::hsm::{AnyInstance, KeySpec, StoredObject};
use pkcs11_sys::*;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Instant;
use uuid::Uuid;

/// Counters of one member, as this process sees them.
#[derive(Default)]
pub struct Stats {
    pub in_flight: AtomicU64,
    pub ops: AtomicU64,
    pub errors: AtomicU64,
    pub latency_us: AtomicU64,
}

pub struct Member {
    pub id: String,
    /// The id, for audit records: interned, so a record takes it without touching a
    /// reference count that every thread's calls share.
    pub name: &'static str,
    audit: Arc<crate::audit::AuditLog>,
    pub kind: &'static str,
    pub path: std::path::PathBuf,
    config: HsmConfig,
    /// Read on every call: a snapshot (no shared lock, no reference count touched).
    instance: arc_swap::ArcSwapOption<AnyInstance>,
    opening: parking_lot::Mutex<()>,
    max_in_flight: u64,
    healthy: AtomicBool,
    /// Why the member last became unhealthy.
    trouble: parking_lot::Mutex<Option<String>>,
    pub stats: Stats,
}

impl Member {
    /// Where the instance is: an embedded one's directory, or a module and its token.
    pub fn location(&self) -> String {
        match self.config.kind {
            HsmKind::Embedded => self.path.display().to_string(),
            HsmKind::Pkcs11 => {
                let module = self
                    .config
                    .module
                    .as_ref()
                    .map(|m| m.display().to_string())
                    .unwrap_or_default();
                match (&self.config.token_label, &self.config.token_serial) {
                    (Some(l), _) => format!("{module} token={l}"),
                    (_, Some(s)) => format!("{module} serial={s}"),
                    _ => module,
                }
            }
        }
    }

    /// Why the member last became unhealthy (if it ever did).
    pub fn trouble(&self) -> Option<String> {
        self.trouble.lock().clone()
    }

    pub fn is_healthy(&self) -> bool {
        self.healthy.load(Ordering::Relaxed)
    }

    pub fn set_healthy(&self, healthy: bool, why: &str) {
        if !healthy {
            *self.trouble.lock() = Some(why.to_string());
        }
        let was = self.healthy.swap(healthy, Ordering::Relaxed);
        if was != healthy {
            let mut e = crate::audit::Event::new(crate::audit::ops::INSTANCE_HEALTH, "CKR_OK");
            e.instance = Some(self.name.into());
            e.reason = Some(format!(
                "{}: {why}",
                if healthy { "healthy" } else { "unhealthy" }
            ));
            if let Err(err) = self.audit.record(e) {
                tracing::error!("audit: {err}");
            }
            if healthy {
                tracing::info!(instance = %self.id, "instance healthy: {why}");
            } else {
                tracing::warn!(instance = %self.id, "instance unhealthy: {why}");
            }
        }
    }

    /// The instance, opening it again if it could not be opened before.
    pub fn instance(&self) -> Result<Arc<AnyInstance>> {
        if let Some(i) = &*self.instance.load() {
            return Ok(i.clone());
        }
        self.open_instance()
    }

    /// Run `f` on the instance without taking a reference to it (the hot path).
    pub fn with_instance<T>(&self, f: impl FnOnce(&AnyInstance) -> Result<T>) -> Result<T> {
        if let Some(i) = &*self.instance.load() {
            return f(i);
        }
        let i = self.open_instance()?;
        f(&i)
    }

    fn open_instance(&self) -> Result<Arc<AnyInstance>> {
        let _g = self.opening.lock();
        if let Some(i) = &*self.instance.load() {
            return Ok(i.clone());
        }
        let i = Arc::new(open(&self.config, &self.path)?);
        self.instance.store(Some(i.clone()));
        Ok(i)
    }

    fn lease(self: &Arc<Self>) -> Lease {
        self.stats.in_flight.fetch_add(1, Ordering::Relaxed);
        Lease {
            member: self.clone(),
            start: Instant::now(),
            end: None,
        }
    }
}

/// The one `'static` copy of an instance id. Ids come from the configuration, so the set
/// stays as small as the number of distinct ids this process has been configured with.
fn intern(id: &str) -> &'static str {
    static IDS: once_cell::sync::Lazy<parking_lot::Mutex<std::collections::HashSet<&'static str>>> =
        once_cell::sync::Lazy::new(Default::default);
    let mut ids = IDS.lock();
    if let Some(s) = ids.get(id) {
        return s;
    }
    let s: &'static str = Box::leak(id.to_owned().into_boxed_str());
    ids.insert(s);
    s
}

/// Open an instance of the kind its configuration names.
fn open(h: &HsmConfig, path: &std::path::Path) -> Result<AnyInstance> {
    Ok(match h.kind {
        HsmKind::Embedded => {
            AnyInstance::Embedded(EmbeddedInstance::open(&h.id, path, h.fault_file.clone())?)
        }
        HsmKind::Pkcs11 => AnyInstance::Pkcs11(Pkcs11Instance::open(h)?),
    })
}

/// A call in progress on a member: counted in flight until dropped.
pub struct Lease {
    member: Arc<Member>,
    start: Instant,
    /// When the call ended, if the holder read the clock anyway (saves a read on drop).
    end: Option<Instant>,
}

impl Lease {
    pub fn member_id(&self) -> &str {
        &self.member.id
    }

    pub fn member_name(&self) -> &'static str {
        self.member.name
    }

    /// Ends the lease, the call having ended at `end`.
    pub fn end_at(mut self, end: Instant) {
        self.end = Some(end);
    }

    pub fn failed(&self) {
        self.member.stats.errors.fetch_add(1, Ordering::Relaxed);
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        let s = &self.member.stats;
        s.in_flight.fetch_sub(1, Ordering::Relaxed);
        s.ops.fetch_add(1, Ordering::Relaxed);
        let end = self.end.unwrap_or_else(Instant::now);
        s.latency_us.fetch_add(
            end.saturating_duration_since(self.start).as_micros() as u64,
            Ordering::Relaxed,
        );
    }
}

thread_local! {
    /// The member that served this thread's last successful call (an index, so that
    /// keeping it costs no shared write); read once by the audit of one-call key uses.
    static LAST_SERVED: std::cell::Cell<Option<usize>> = const { std::cell::Cell::new(None) };
}

/// How long a call waits for an instance below its concurrency limit.
const BUSY_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

pub struct Cluster {
    members: Vec<Arc<Member>>,
    balance: Balance,
    next: AtomicUsize,
    min_replicas: usize,
}

impl Cluster {
    pub fn open(cfg: &Config, audit: &Arc<crate::audit::AuditLog>) -> Result<Cluster> {
        let members: Vec<Arc<Member>> = cfg
            .hsms
            .iter()
            .map(|h| {
                let path = cfg.hsm_dir(h);
                let (instance, healthy, trouble) = match open(h, &path) {
                    Ok(i) => (Some(Arc::new(i)), true, None),
                    Err(e) => {
                        tracing::error!(instance = %h.id, "cannot open instance {}: {e}", h.id);
                        (None, false, Some(e.msg.to_string()))
                    }
                };
                Arc::new(Member {
                    id: h.id.clone(),
                    name: intern(&h.id),
                    audit: audit.clone(),
                    kind: match h.kind {
                        HsmKind::Embedded => "embedded",
                        HsmKind::Pkcs11 => "pkcs11",
                    },
                    path,
                    config: h.clone(),
                    instance: arc_swap::ArcSwapOption::new(instance),
                    opening: parking_lot::Mutex::new(()),
                    max_in_flight: h.max_in_flight.unwrap_or(u64::MAX),
                    healthy: AtomicBool::new(healthy),
                    trouble: parking_lot::Mutex::new(trouble),
                    stats: Stats::default(),
                })
            })
            .collect();
        if members.is_empty() {
            return Err(Error::general("the key store has no HSM instance"));
        }
        let min_replicas =
            cfg.keystore
                .min_replicas
                .unwrap_or(if members.len() == 1 { 1 } else { 2 });
        Ok(Cluster {
            members,
            balance: cfg.keystore.balance,
            next: AtomicUsize::new(0),
            min_replicas,
        })
    }

    pub fn members(&self) -> &[Arc<Member>] {
        &self.members
    }

    pub fn min_replicas(&self) -> usize {
        self.min_replicas
    }

    /// The member the balancing policy prefers among the healthy ones not yet `tried`
    /// (a bit per member). No allocation and, for least-outstanding, no shared write.
    ///
    /// Least-outstanding first offers each thread its current member: if nothing is in
    /// flight there, no member can have fewer, and the choice is made without reading the
    /// others' counters. Threads thus settle on different members and share no counter,
    /// lock or key cache from call to call (on two cores that alone is worth ~10%). Every
    /// `STAY` calls the thread moves on to the next member, so that one thread's calls
    /// still reach every member; ties in the full scan rotate the same way.
    fn pick(&self, tried: u64) -> Option<(usize, &Arc<Member>)> {
        const STAY: usize = 64;
        static THREADS: AtomicU64 = AtomicU64::new(0);
        thread_local!(static TURN: std::cell::Cell<Option<usize>> = const { std::cell::Cell::new(None) });
        let n = self.members.len();
        let start = match self.balance {
            Balance::RoundRobin => self.next.fetch_add(1, Ordering::Relaxed),
            Balance::LeastOutstanding => {
                let turn = TURN.with(|t| {
                    // Each thread starts on another member.
                    let v = t.get().map_or_else(
                        || THREADS.fetch_add(1, Ordering::Relaxed) as usize * STAY,
                        |v| v.wrapping_add(1),
                    );
                    t.set(Some(v));
                    v
                });
                let mine = (turn / STAY) % n;
                let m = &self.members[mine];
                if tried & (1 << mine) == 0
                    && m.is_healthy()
                    && m.stats.in_flight.load(Ordering::Relaxed) == 0
                {
                    return Some((mine, m));
                }
                mine
            }
        };
        let mut best: Option<(usize, u64)> = None;
        for k in 0..n {
            let i = (start + k) % n;
            if tried & (1 << i) != 0 || !self.members[i].is_healthy() {
                continue;
            }
            let load = match self.balance {
                Balance::LeastOutstanding => {
                    self.members[i].stats.in_flight.load(Ordering::Relaxed)
                }
                Balance::RoundRobin => 0,
            };
            if best.is_none_or(|(_, l)| load < l) {
                best = Some((i, load));
            }
        }
        best.map(|(i, _)| (i, &self.members[i]))
    }

    /// Run `f` on one healthy member, moving to another on a device failure or when
    /// the member lacks the key. Semantic errors are returned as they are.
    pub fn run<T>(&self, f: impl Fn(&AnyInstance) -> Result<T>) -> Result<(T, Lease)> {
        let mut last: Option<Error> = None;
        let mut wait = std::time::Duration::from_micros(50);
        // Read the clock only once a wait begins: the usual call never waits.
        let mut deadline: Option<Instant> = None;
        let mut timed_out = false;
        loop {
            let mut busy = false;
            let mut tried = 0u64;
            while let Some((i, m)) = self.pick(tried) {
                tried |= 1 << i;
                // A member at its concurrency limit is passed over for now.
                if m.stats.in_flight.load(Ordering::Relaxed) >= m.max_in_flight {
                    busy = true;
                    continue;
                }
                let lease = m.lease();
                let result = m.with_instance(&f);
                match result {
                    Ok(v) => {
                        LAST_SERVED.with(|l| l.set(Some(i)));
                        return Ok((v, lease));
                    }
                    Err(e) if e.is_device_failure() => {
                        lease.failed();
                        m.set_healthy(false, &e.msg);
                        last = Some(e);
                    }
                    // The member lacks the key, or its module the mechanism: ask another.
                    Err(e) if matches!(e.rv, CKR_KEY_HANDLE_INVALID | CKR_MECHANISM_INVALID) => {
                        last = Some(e)
                    }
                    Err(e) => return Err(e),
                }
            }
            // Every member able to serve is at its limit: back off and try again.
            if !busy || last.is_some() {
                break;
            }
            let due = *deadline.get_or_insert_with(|| Instant::now() + BUSY_TIMEOUT);
            if Instant::now() >= due {
                timed_out = true;
                break;
            }
            std::thread::sleep(wait);
            wait = (wait * 2).min(std::time::Duration::from_millis(20));
        }
        Err(match last {
            Some(e) if matches!(e.rv, CKR_KEY_HANDLE_INVALID | CKR_MECHANISM_INVALID) => e,
            Some(e) => Error::new(
                CKR_DEVICE_ERROR,
                format!("no healthy instance could serve the call (last: {})", e.msg),
            ),
            None if timed_out => Error::new(
                CKR_FUNCTION_FAILED,
                "every instance stayed at its concurrency limit (max_in_flight)",
            ),
            None => Error::new(CKR_DEVICE_ERROR, "no healthy HSM instance"),
        })
    }

    /// The instance that served this thread's last call through `run`, once.
    pub fn take_last_served(&self) -> Option<&'static str> {
        let i = LAST_SERVED.with(|l| l.take())?;
        self.members.get(i).map(|m| m.name)
    }

    /// Run `f` on every healthy member; returns how many succeeded. Device failures mark
    /// members unhealthy.
    pub fn each(&self, f: impl Fn(&AnyInstance) -> Result<()>) -> (usize, Option<Error>) {
        let mut ok = 0;
        let mut err = None;
        for m in self.members.iter().filter(|m| m.is_healthy()) {
            match m.instance().and_then(|i| f(&i)) {
                Ok(()) => ok += 1,
                Err(e) => {
                    if e.is_device_failure() {
                        m.set_healthy(false, &e.msg);
                    }
                    err = Some(e);
                }
            }
        }
        (ok, err)
    }

    /// Keep a new object. Session objects live in memory on every member; token
    /// objects are written to one member and replicated (domain-wrapped) to the rest,
    /// and count as created once on `min_replicas` members — else nothing is left.
    pub fn put_object(
        &self,
        uid: Uuid,
        attrs: Vec<u8>,
        material: Option<KeyMaterial>,
        persistent: bool,
    ) -> Result<()> {
        if !persistent {
            if let Some(m) = material {
                let m = Arc::new(m);
                for member in &self.members {
                    if let Ok(i) = member.instance() {
                        i.put_session_material(uid, m.clone());
                    }
                }
            }
            return Ok(());
        }
        self.replicated(uid, |i| {
            i.put_object(uid, attrs.clone(), material.clone(), true)
        })
    }

    /// Generate a token key inside one member and replicate it (domain-wrapped) to the
    /// rest; `attrs` gives its final attributes from the public half. Returns the
    /// public half of a key pair.
    pub fn generate(
        &self,
        uid: Uuid,
        spec: &KeySpec,
        attrs: crate::hsm::AttrsOf,
    ) -> Result<Option<crate::hsm::crypto::KeyMaterial>> {
        let public = parking_lot::Mutex::new(None);
        self.replicated(uid, |i| {
            *public.lock() = i.generate(uid, spec, attrs)?;
            Ok(())
        })?;
        Ok(public.into_inner())
    }

    /// Make a token object on one member with `make`, then copy it to every other
    /// healthy member. It counts as created once on `min_replicas` members — else
    /// nothing is left.
    fn replicated(&self, uid: Uuid, make: impl Fn(&AnyInstance) -> Result<()>) -> Result<()> {
        let healthy = self.members.iter().filter(|m| m.is_healthy()).count();
        if healthy < self.min_replicas {
            return Err(Error::new(
                CKR_DEVICE_ERROR,
                format!(
                    "only {healthy} healthy instances; {} needed to create a key",
                    self.min_replicas
                ),
            ));
        }
        let source = self.make_on_one(&make)?;
        let mut copies = 1;
        let src = self.member(&source)?.instance()?;
        for m in self
            .members
            .iter()
            .filter(|m| m.is_healthy() && m.id != source)
        {
            match m
                .instance()
                .and_then(|dst| crate::hsm::copy_object(&src, &dst, uid))
            {
                Ok(()) => copies += 1,
                Err(e) => {
                    tracing::warn!(instance = %m.id, key = %uid, "replication failed: {e}");
                    if e.is_device_failure() {
                        m.set_healthy(false, &e.msg);
                    }
                }
            }
        }
        if copies < self.min_replicas {
            let _ = self.each(|i| i.destroy(uid, true));
            return Err(Error::new(
                CKR_DEVICE_ERROR,
                format!(
                    "key durable on {copies} instances; {} needed",
                    self.min_replicas
                ),
            ));
        }
        Ok(())
    }

    /// Run `make` on one member; returns its id. Where some members are remote, those
    /// in this process come first, and members that cannot export (wrap under the
    /// domain key) last: a key made there could not be copied to the others.
    fn make_on_one(&self, make: &impl Fn(&AnyInstance) -> Result<()>) -> Result<String> {
        let rank = |m: &Arc<Member>| {
            m.instance()
                .map(|i| (!i.can_export(), i.is_remote()))
                .unwrap_or((true, true))
        };
        if !self.members.iter().any(|m| rank(m) != (false, false)) {
            let (source, _lease) = self.run(|i| {
                make(i)?;
                Ok(i.id().to_string())
            })?;
            return Ok(source);
        }
        let mut order: Vec<&Arc<Member>> = self.members.iter().filter(|m| m.is_healthy()).collect();
        order.sort_by_key(|m| rank(m));
        let mut last = None;
        for m in order {
            let lease = m.lease();
            match m.with_instance(|i| make(i)) {
                Ok(()) => return Ok(m.id.clone()),
                Err(e) if e.is_device_failure() => {
                    lease.failed();
                    m.set_healthy(false, &e.msg);
                    last = Some(e);
                }
                Err(e) if e.rv == CKR_MECHANISM_INVALID => last = Some(e),
                Err(e) => return Err(e),
            }
        }
        Err(last.unwrap_or_else(|| Error::device("no healthy HSM instance")))
    }

    fn member(&self, id: &str) -> Result<&Arc<Member>> {
        self.members
            .iter()
            .find(|m| m.id == id)
            .ok_or_else(|| Error::general(format!("no instance {id}")))
    }

    /// Change a token object's attributes on every healthy member; a majority of all
    /// members must take it.
    pub fn update_attrs(&self, uid: Uuid, attrs: &[u8]) -> Result<()> {
        let (ok, err) = self.each(|i| i.update_attrs(uid, attrs));
        let majority = self.members.len() / 2 + 1;
        if ok < majority {
            return Err(
                err.unwrap_or_else(|| Error::device("no majority of instances took the change"))
            );
        }
        Ok(())
    }

    pub fn destroy(&self, uid: Uuid, persistent: bool) -> Result<()> {
        if !persistent {
            for m in &self.members {
                if let Ok(i) = m.instance() {
                    let _ = i.destroy(uid, false);
                }
            }
            return Ok(());
        }
        let (ok, err) = self.each(|i| i.destroy(uid, true));
        if ok == 0 {
            return Err(err.unwrap_or_else(|| Error::device("no healthy HSM instance")));
        }
        Ok(())
    }

    /// Token objects: the union over healthy members.
    pub fn load_objects(&self) -> Result<Vec<StoredObject>> {
        let mut by_uid: HashMap<Uuid, StoredObject> = HashMap::new();
        let mut any = false;
        for m in self.members.iter().filter(|m| m.is_healthy()) {
            match m.instance().and_then(|i| i.load_objects()) {
                Ok(objs) => {
                    any = true;
                    for o in objs {
                        by_uid.entry(o.uid).or_insert(o);
                    }
                }
                Err(e) => m.set_healthy(false, &e.msg),
            }
        }
        if !any {
            return Err(Error::device("no healthy HSM instance"));
        }
        Ok(by_uid.into_values().collect())
    }

    /// Changes whenever any member's store changes or a member's health changes.
    pub fn data_version(&self) -> Result<i64> {
        let mut v: i64 = 0;
        for (n, m) in self.members.iter().enumerate() {
            if m.is_healthy() {
                let d = m.instance().and_then(|i| i.data_version()).unwrap_or(-1);
                v = v
                    .wrapping_mul(1_000_003)
                    .wrapping_add(d)
                    .wrapping_add(1 << (n % 60));
            }
        }
        Ok(v)
    }

    /// CMK metadata: for each key the record with the highest generation any healthy
    /// member holds.
    pub fn load_cmks(&self) -> Result<Vec<(Uuid, u64, Vec<u8>)>> {
        let mut best: HashMap<Uuid, (u64, Vec<u8>)> = HashMap::new();
        let mut any = false;
        for m in self.members.iter().filter(|m| m.is_healthy()) {
            match m.instance().and_then(|i| i.load_cmks()) {
                Ok(records) => {
                    any = true;
                    for (id, g, meta) in records {
                        if best.get(&id).is_none_or(|(bg, _)| g > *bg) {
                            best.insert(id, (g, meta));
                        }
                    }
                }
                Err(e) => m.set_healthy(false, &e.msg),
            }
        }
        if !any {
            return Err(Error::device("no healthy HSM instance"));
        }
        Ok(best.into_iter().map(|(id, (g, m))| (id, g, m)).collect())
    }

    /// Write a CMK record; a majority of all members must hold it afterwards.
    pub fn put_cmk(&self, id: Uuid, generation: u64, meta: &[u8]) -> Result<()> {
        let (ok, err) = self.each(|i| i.put_cmk(id, generation, meta).map(|_| ()));
        let majority = self.members.len() / 2 + 1;
        if ok < majority {
            return Err(err.unwrap_or_else(|| {
                Error::device(format!(
                    "key metadata reached {ok} instances; a majority ({majority}) is needed"
                ))
            }));
        }
        Ok(())
    }

    pub fn delete_cmk(&self, id: Uuid) -> Result<()> {
        let (ok, err) = self.each(|i| i.delete_cmk(id));
        if ok == 0 {
            return Err(err.unwrap_or_else(|| Error::device("no healthy HSM instance")));
        }
        Ok(())
    }

    /// What a remote operation needs to be finished on another member.
    fn replay(
        &self,
        lease: &Lease,
        uid: Uuid,
        mech: &crate::hsm::mechanism::Mechanism,
    ) -> replay::Replay {
        replay::Replay {
            members: self.members.clone(),
            served: self
                .members
                .iter()
                .position(|m| Arc::ptr_eq(m, &lease.member))
                .unwrap_or(0),
            uid,
            mech: mech.clone(),
            input: zeroize::Zeroizing::new(Vec::new()),
        }
    }

    /// Start a signature on a member; on a remote member it can be finished elsewhere.
    pub fn signer(
        &self,
        uid: Uuid,
        mech: &crate::hsm::mechanism::Mechanism,
    ) -> Result<(Box<dyn crate::hsm::crypto::SignOp>, Lease)> {
        let ((op, remote), lease) = self.run(|i| Ok((i.signer(uid, mech)?, i.is_remote())))?;
        if !remote {
            return Ok((op, lease));
        }
        let replay = self.replay(&lease, uid, mech);
        Ok((Box::new(replay::ReplaySign { op, replay }), lease))
    }

    pub fn verifier(
        &self,
        uid: Uuid,
        mech: &crate::hsm::mechanism::Mechanism,
    ) -> Result<(Box<dyn crate::hsm::crypto::VerifyOp>, Lease)> {
        let ((op, remote), lease) = self.run(|i| Ok((i.verifier(uid, mech)?, i.is_remote())))?;
        if !remote {
            return Ok((op, lease));
        }
        let replay = self.replay(&lease, uid, mech);
        Ok((Box::new(replay::ReplayVerify { op, replay }), lease))
    }

    pub fn cipher(
        &self,
        uid: Uuid,
        mech: &crate::hsm::mechanism::Mechanism,
        encrypt: bool,
    ) -> Result<(Box<dyn crate::hsm::crypto::CipherOp>, Lease)> {
        let ((op, remote), lease) =
            self.run(|i| Ok((i.cipher(uid, mech, encrypt)?, i.is_remote())))?;
        if !remote {
            return Ok((op, lease));
        }
        let replay = self.replay(&lease, uid, mech);
        Ok((
            Box::new(replay::ReplayCipher {
                op,
                encrypt,
                replay,
                delivered: 0,
            }),
            lease,
        ))
    }

    pub fn material(&self, uid: Uuid) -> Result<Arc<KeyMaterial>> {
        self.run(|i| i.material(uid)).map(|(m, _)| m)
    }
}
