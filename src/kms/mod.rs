//! Customer master keys: KMS-style metadata over the keys the HSMs hold — id, ARN,
//! aliases, spec, usage, state, versions, deletion date. A record is kept in every
//! instance with a generation number; the highest generation wins and lagging members
//! are repaired. This module knows nothing of PKCS#11 sessions; `lifecycle` maps CMKs
//! to the token's objects.

pub mod envelope;
pub mod lifecycle;

use crate::error::{Error, Result};
use pkcs11_sys::*;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::sync::Arc;
use uuid::Uuid;

#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
pub enum KeyState {
    Enabled,
    Disabled,
    PendingDeletion,
}

impl KeyState {
    /// `CKA_CKS_KEY_STATE` values (include/cks_pkcs11.h).
    pub fn code(self) -> CK_ULONG {
        match self {
            KeyState::Enabled => 0,
            KeyState::Disabled => 1,
            KeyState::PendingDeletion => 2,
        }
    }
}

pub const STATE_UNAVAILABLE: CK_ULONG = 3;

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct Version {
    pub version: u32,
    /// The secret or private key object of this version.
    pub object: Uuid,
    /// The public half of an asymmetric version.
    pub public_object: Option<Uuid>,
    pub created: i64,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct Cmk {
    pub id: Uuid,
    pub generation: u64,
    pub aliases: Vec<String>,
    pub description: String,
    /// `AES_256`, `ECC_NIST_P256`, `ECC_NIST_P384`, `RSA_2048`… `HMAC_256`.
    pub spec: String,
    /// `ENCRYPT_DECRYPT`, `SIGN_VERIFY`, `GENERATE_VERIFY_MAC`, `WRAP_UNWRAP`.
    pub usage: String,
    pub state: KeyState,
    pub created: i64,
    pub deletion_date: Option<i64>,
    /// Days between automatic rotations; `None`: rotate by hand only.
    pub rotation_days: Option<u32>,
    pub versions: Vec<Version>,
}

impl Cmk {
    pub fn arn(&self, keystore_id: &str) -> String {
        format!("arn:cks:kms:{keystore_id}:key/{}", self.id)
    }

    pub fn latest(&self) -> Option<&Version> {
        self.versions.iter().max_by_key(|v| v.version)
    }

    pub fn version_of(&self, object: Uuid) -> Option<&Version> {
        self.versions
            .iter()
            .find(|v| v.object == object || v.public_object == Some(object))
    }

    pub fn primary_alias(&self) -> Option<&str> {
        self.aliases.first().map(String::as_str)
    }

    /// Every object that holds this key's material or its public half.
    pub fn objects(&self) -> impl Iterator<Item = Uuid> + '_ {
        self.versions
            .iter()
            .flat_map(|v| std::iter::once(v.object).chain(v.public_object))
    }

    /// The objects other than the key's id (what `Registry::by_object` holds), with
    /// their versions.
    fn other_objects(&self) -> impl Iterator<Item = (Uuid, u32)> + '_ {
        self.versions
            .iter()
            .flat_map(|v| {
                std::iter::once(v.object)
                    .chain(v.public_object)
                    .map(|o| (o, v.version))
            })
            .filter(|(o, _)| *o != self.id)
    }

    pub fn encode(&self) -> Result<Vec<u8>> {
        serde_json::to_vec(self).map_err(|e| Error::general(format!("encode key metadata: {e}")))
    }

    pub fn decode(bytes: &[u8]) -> Result<Cmk> {
        serde_json::from_slice(bytes)
            .map_err(|e| Error::device(format!("corrupt key metadata: {e}")))
    }
}

pub fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// RFC 3339 (UTC) for a unix time, e.g. `2026-11-28T18:07:57Z`.
pub fn rfc3339(t: i64) -> String {
    let days = t.div_euclid(86_400);
    let secs = t.rem_euclid(86_400);
    // Civil-from-days (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = if m <= 2 { y + 1 } else { y };
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        secs / 3600,
        secs % 3600 / 60,
        secs % 60
    )
}

/// An alias is `alias/` followed by letters, digits, `/`, `_`, `-` (as in KMS).
pub fn check_alias(alias: &str) -> Result<()> {
    let ok = alias.strip_prefix("alias/").is_some_and(|n| {
        !n.is_empty()
            && n.len() <= 250
            && !n.starts_with("aws/")
            && n.chars()
                .all(|c| c.is_ascii_alphanumeric() || "/_-".contains(c))
    });
    if !ok {
        return Err(Error::new(
            CKR_ARGUMENTS_BAD,
            format!("{alias:?} is not an alias: expected alias/NAME (letters, digits, / _ -)"),
        ));
    }
    Ok(())
}

/// A map split into shards by its key, each shard behind an `Arc`: cloning the map
/// copies 256 pointers, and a change copies one shard (a 256th of the map). The
/// registry is replaced as a whole on every change (readers hold snapshots); with
/// 100,000 keys a flat map made each new key copy all of them. Keys are random ids and
/// aliases an administrator chose: a fast hash, not SipHash.
#[derive(Clone)]
struct Sharded<K, V>(Vec<Arc<HashMap<K, V, rustc_hash::FxBuildHasher>>>);

const SHARDS: usize = 256;

trait ShardKey: std::hash::Hash + Eq {
    fn shard(&self) -> usize;
}

impl ShardKey for Uuid {
    fn shard(&self) -> usize {
        // v4 uids are random from their first byte on.
        self.as_bytes()[0] as usize % SHARDS
    }
}

impl ShardKey for String {
    fn shard(&self) -> usize {
        self.as_str().shard()
    }
}

impl ShardKey for str {
    fn shard(&self) -> usize {
        // FNV-1a: stable and cheap; the shard's own map hashes again.
        let h = self.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
            (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
        });
        h as usize % SHARDS
    }
}

impl<K: ShardKey + Clone, V: Clone> Default for Sharded<K, V> {
    fn default() -> Self {
        Sharded((0..SHARDS).map(|_| Arc::new(HashMap::default())).collect())
    }
}

impl<K: ShardKey + Clone, V: Clone> Sharded<K, V> {
    fn get<Q>(&self, k: &Q) -> Option<&V>
    where
        K: std::borrow::Borrow<Q>,
        Q: ShardKey + ?Sized,
    {
        self.0[k.shard()].get(k)
    }

    fn insert(&mut self, k: K, v: V) {
        Arc::make_mut(&mut self.0[k.shard()]).insert(k, v);
    }

    /// Room for `more[i]` more entries in shard `i`.
    fn reserve(&mut self, more: &[usize; SHARDS]) {
        for (shard, n) in self.0.iter_mut().zip(more) {
            if *n > 0 {
                Arc::make_mut(shard).reserve(*n);
            }
        }
    }

    fn remove(&mut self, k: &K) -> Option<V> {
        let shard = &mut self.0[k.shard()];
        if !shard.contains_key(k) {
            return None;
        }
        Arc::make_mut(shard).remove(k)
    }

    fn values(&self) -> impl Iterator<Item = &V> {
        self.0.iter().flat_map(|s| s.values())
    }

    fn len(&self) -> usize {
        self.0.iter().map(|s| s.len()).sum()
    }
}

/// The CMKs as this process last read them, indexed for the hot path.
#[derive(Default, Clone)]
pub struct Registry {
    cmks: Sharded<Uuid, Arc<Cmk>>,
    /// object uid → (CMK id, version), for the objects whose uid is not their key's id:
    /// a key's first object has the key's id (`register_cmk`), so with 100,000 keys
    /// this holds only public halves and rotated versions.
    by_object: Sharded<Uuid, (Uuid, u32)>,
    /// alias → CMK id
    by_alias: Sharded<String, Uuid>,
}

impl Registry {
    pub fn from_records(records: impl IntoIterator<Item = Cmk>) -> Registry {
        let records: Vec<Cmk> = records.into_iter().collect();
        let mut r = Registry::default();
        // Each shard sized once (100,000 keys grew 768 maps step by step).
        let mut more = [[0usize; SHARDS]; 3];
        for c in &records {
            more[0][c.id.shard()] += 1;
            for (o, _) in c.other_objects() {
                more[1][o.shard()] += 1;
            }
            for a in &c.aliases {
                more[2][a.shard()] += 1;
            }
        }
        r.cmks.reserve(&more[0]);
        r.by_object.reserve(&more[1]);
        r.by_alias.reserve(&more[2]);
        for c in records {
            r.insert(c);
        }
        r
    }

    pub fn insert(&mut self, c: Cmk) {
        if let Some(old) = self.cmks.get(&c.id).cloned() {
            if old.generation > c.generation {
                return;
            }
            self.unlink(&old);
        }
        for a in &c.aliases {
            self.by_alias.insert(a.clone(), c.id);
        }
        for (o, v) in c.other_objects() {
            self.by_object.insert(o, (c.id, v));
        }
        self.cmks.insert(c.id, Arc::new(c));
    }

    pub fn remove(&mut self, id: Uuid) {
        if let Some(old) = self.cmks.remove(&id) {
            self.unlink(&old);
        }
    }

    /// Forget the objects and aliases of a record that is replaced or removed.
    fn unlink(&mut self, old: &Cmk) {
        for (o, _) in old.other_objects() {
            self.by_object.remove(&o);
        }
        for a in &old.aliases {
            if self.by_alias.get(a) == Some(&old.id) {
                self.by_alias.remove(a);
            }
        }
    }

    /// Every CMK, in no particular order.
    pub fn cmks(&self) -> impl Iterator<Item = &Cmk> {
        self.cmks.values().map(|c| &**c)
    }

    pub fn len(&self) -> usize {
        self.cmks.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The CMK and version an object belongs to.
    pub fn for_object(&self, object: Uuid) -> Option<(&Cmk, u32)> {
        if let Some((id, v)) = self.by_object.get(&object) {
            return Some((self.cmks.get(id)?, *v));
        }
        // A key's first object has the key's id.
        let c = self.cmks.get(&object)?;
        Some((c, c.version_of(object)?.version))
    }

    /// The key with this id.
    pub fn get(&self, id: Uuid) -> Option<&Cmk> {
        self.cmks.get(&id).map(|c| &**c)
    }

    /// Does a key record name this object?
    pub fn names_object(&self, object: Uuid) -> bool {
        self.for_object(object).is_some()
    }

    /// A key named by id, ARN or alias.
    pub fn resolve(&self, name: &str) -> Option<&Cmk> {
        let id_part = name.rsplit_once("key/").map(|(_, id)| id).unwrap_or(name);
        if let Ok(id) = Uuid::parse_str(id_part) {
            return self.cmks.get(&id).map(|c| &**c);
        }
        let id = self.alias_owner(name)?;
        self.cmks.get(&id).map(|c| &**c)
    }

    pub fn alias_owner(&self, alias: &str) -> Option<Uuid> {
        self.by_alias.get(alias).copied().filter(|id| {
            self.cmks
                .get(id)
                .is_some_and(|c| c.aliases.iter().any(|a| a == alias))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(1_795_889_277), "2026-11-28T18:07:57Z");
        assert_eq!(rfc3339(951_782_400), "2000-02-29T00:00:00Z");
    }

    #[test]
    fn aliases() {
        assert!(check_alias("alias/tde-master_1").is_ok());
        assert!(check_alias("tde").is_err());
        assert!(check_alias("alias/").is_err());
        assert!(check_alias("alias/a b").is_err());
    }

    /// A key's first object has the key's id and is found without `by_object`; public
    /// halves and later versions through it; replacing or removing a record forgets
    /// what it no longer names.
    #[test]
    fn registry_finds_every_object_of_a_key() {
        let id = Uuid::new_v4();
        let (pub1, v2, pub2) = (Uuid::new_v4(), Uuid::new_v4(), Uuid::new_v4());
        let version = |version, object, public_object| Version {
            version,
            object,
            public_object,
            created: 0,
        };
        let mut c = Cmk {
            id,
            generation: 1,
            aliases: vec![],
            description: String::new(),
            spec: "ECC_NIST_P256".into(),
            usage: "SIGN_VERIFY".into(),
            state: KeyState::Enabled,
            created: 0,
            deletion_date: None,
            rotation_days: None,
            versions: vec![version(1, id, Some(pub1))],
        };
        let mut r = Registry::from_records([c.clone()]);
        assert_eq!(r.for_object(id).map(|(k, v)| (k.id, v)), Some((id, 1)));
        assert_eq!(r.for_object(pub1).map(|(k, v)| (k.id, v)), Some((id, 1)));
        assert!(r.names_object(id) && r.names_object(pub1) && !r.names_object(v2));
        assert_eq!(r.by_object.len(), 1);

        c.generation = 2;
        c.versions.push(version(2, v2, Some(pub2)));
        r.insert(c.clone());
        for (o, want) in [(id, 1), (pub1, 1), (v2, 2), (pub2, 2)] {
            assert_eq!(r.for_object(o).map(|(k, v)| (k.id, v)), Some((id, want)));
        }
        // A newer record without the first version (not something KMS does, but the
        // registry must follow what the record says).
        c.generation = 3;
        c.versions.remove(0);
        r.insert(c);
        assert!(r.for_object(id).is_none() && r.for_object(pub1).is_none());
        assert_eq!(r.for_object(v2).map(|(_, v)| v), Some(2));
        assert!(r.get(id).is_some());
        r.remove(id);
        assert!(r.for_object(v2).is_none() && r.for_object(pub2).is_none());
        assert!(r.is_empty() && r.by_object.len() == 0);
    }

    #[test]
    fn registry_keeps_the_highest_generation() {
        let id = Uuid::new_v4();
        let obj = Uuid::new_v4();
        let mk = |g, state| Cmk {
            id,
            generation: g,
            aliases: vec!["alias/x".into()],
            description: String::new(),
            spec: "AES_256".into(),
            usage: "ENCRYPT_DECRYPT".into(),
            state,
            created: 0,
            deletion_date: None,
            rotation_days: None,
            versions: vec![Version {
                version: 1,
                object: obj,
                public_object: None,
                created: 0,
            }],
        };
        let mut r = Registry::default();
        r.insert(mk(2, KeyState::Disabled));
        r.insert(mk(1, KeyState::Enabled));
        assert_eq!(r.for_object(obj).unwrap().0.state, KeyState::Disabled);
        assert_eq!(r.resolve("alias/x").unwrap().id, id);
        assert_eq!(
            r.resolve(&format!("arn:cks:kms:abc:key/{id}")).unwrap().id,
            id
        );
    }
}
