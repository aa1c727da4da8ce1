//! Object handles: the process-local table from `CK_OBJECT_HANDLE` to objects.
//! Handles are never reused, so a stale handle cannot name another object.
//!
//! The table also indexes objects by `CKA_LABEL` and by `CKA_ID`, so that a search
//! whose template names either (what applications do: find the key called X) looks at
//! the few objects that carry that value, not at every object of the token.

use super::attribute::Attributes;
use pkcs11_sys::*;
use rustc_hash::FxBuildHasher;
use std::collections::hash_map::RandomState;
use std::hash::BuildHasher;
use std::sync::Arc;
use uuid::Uuid;

#[derive(Clone, Debug)]
pub struct Object {
    pub uid: Uuid,
    pub attrs: Attributes,
    /// The session that owns a session object; `None` for token objects.
    pub session: Option<CK_SESSION_HANDLE>,
    /// The key id (`CKA_CKS_KEY_ID`), for audit records.
    pub key_id: Option<crate::audit::KeyRef>,
    /// `CKA_PRIVATE`, read once: logout and searches before login ask every object,
    /// and the attributes are in another allocation. The table sets it again when it
    /// takes an object, so a change to `attrs` before that cannot leave it stale.
    private: bool,
}

impl Object {
    pub fn new(uid: Uuid, attrs: Attributes, session: Option<CK_SESSION_HANDLE>) -> Object {
        let key_id = attrs
            .get(super::policy::CKA_CKS_KEY_ID)
            .and_then(|v| std::str::from_utf8(v).ok())
            .map(crate::audit::KeyRef::parse);
        Object {
            uid,
            private: attrs.flag(CKA_PRIVATE),
            attrs,
            session,
            key_id,
        }
    }

    pub fn is_token(&self) -> bool {
        self.session.is_none()
    }

    pub fn is_private(&self) -> bool {
        self.private
    }
}

/// The attributes the table indexes.
const INDEXED: [CK_ATTRIBUTE_TYPE; 2] = [CKA_LABEL, CKA_ID];

/// The handles of the objects whose indexed value has one hash: almost always one
/// (a label), often two (the `CKA_ID` of a key pair), sometimes very many (one
/// `CKA_ID` given to a whole family of objects), where a set keeps removal cheap.
#[derive(Debug)]
enum Bucket {
    One(CK_OBJECT_HANDLE),
    Few(Vec<CK_OBJECT_HANDLE>),
    /// Boxed: a bucket is then no larger than a `Vec` (two indexes, an entry per object).
    Many(Box<HashSet<CK_OBJECT_HANDLE>>),
}

/// Maps keyed by handles, uids and value hashes (none chosen by a caller: handles are
/// ours, uids random, value hashes keyed): a fast hash, no SipHash per look-up.
type HashMap<K, V> = std::collections::HashMap<K, V, FxBuildHasher>;
type HashSet<K> = std::collections::HashSet<K, FxBuildHasher>;

/// Beyond this many handles a bucket is a set.
const FEW: usize = 16;

impl Bucket {
    fn handles(&self) -> Box<dyn Iterator<Item = CK_OBJECT_HANDLE> + '_> {
        match self {
            Bucket::One(h) => Box::new(std::iter::once(*h)),
            Bucket::Few(v) => Box::new(v.iter().copied()),
            Bucket::Many(set) => Box::new(set.iter().copied()),
        }
    }

    fn len(&self) -> usize {
        match self {
            Bucket::One(_) => 1,
            Bucket::Few(v) => v.len(),
            Bucket::Many(set) => set.len(),
        }
    }
}

/// Handles by the hash of one attribute's value. A hash, not the value, is kept (eight
/// bytes per object rather than a copy of every label); the caller compares the
/// values of the candidates, so a collision costs a comparison, never a wrong result.
#[derive(Default)]
struct Index {
    map: HashMap<u64, Bucket>,
}

impl Index {
    fn add(&mut self, key: u64, h: CK_OBJECT_HANDLE) {
        use std::collections::hash_map::Entry;
        match self.map.entry(key) {
            Entry::Vacant(e) => {
                e.insert(Bucket::One(h));
            }
            Entry::Occupied(mut e) => {
                let b = e.get_mut();
                match b {
                    Bucket::One(first) => *b = Bucket::Few(vec![*first, h]),
                    Bucket::Few(v) if v.len() < FEW => v.push(h),
                    Bucket::Few(v) => {
                        let mut set: Box<HashSet<_>> = Box::new(v.drain(..).collect());
                        set.insert(h);
                        *b = Bucket::Many(set);
                    }
                    Bucket::Many(set) => {
                        set.insert(h);
                    }
                }
            }
        }
    }

    fn remove(&mut self, key: u64, h: CK_OBJECT_HANDLE) {
        let Some(b) = self.map.get_mut(&key) else {
            return;
        };
        match b {
            Bucket::One(x) if *x == h => {
                self.map.remove(&key);
                return;
            }
            Bucket::One(_) => return,
            Bucket::Few(v) => v.retain(|x| *x != h),
            Bucket::Many(set) => {
                set.remove(&h);
            }
        }
        match b.len() {
            0 => {
                self.map.remove(&key);
            }
            1 => {
                let last = b.handles().next();
                if let Some(last) = last {
                    *b = Bucket::One(last);
                }
            }
            _ => {}
        }
    }

    fn get(&self, key: u64) -> Box<dyn Iterator<Item = CK_OBJECT_HANDLE> + '_> {
        match self.map.get(&key) {
            Some(b) => b.handles(),
            None => Box::new(std::iter::empty()),
        }
    }
}

#[derive(Default)]
pub struct ObjectTable {
    by_handle: HashMap<CK_OBJECT_HANDLE, Arc<Object>>,
    by_uid: HashMap<Uuid, CK_OBJECT_HANDLE>,
    /// One index per attribute of `INDEXED`, in that order.
    by_value: [Index; INDEXED.len()],
    hasher: RandomState,
    next: CK_OBJECT_HANDLE,
    /// How many session objects there are: closing a session with none to remove (the
    /// usual case) then costs no scan and no write lock.
    session_objects: usize,
}

impl ObjectTable {
    fn key(&self, value: &[u8]) -> u64 {
        self.hasher.hash_one(value)
    }

    fn index(&mut self, h: CK_OBJECT_HANDLE, attrs: &Attributes) {
        for (i, t) in INDEXED.iter().enumerate() {
            if let Some(v) = attrs.get(*t) {
                let k = self.key(v);
                self.by_value[i].add(k, h);
            }
        }
    }

    fn unindex(&mut self, h: CK_OBJECT_HANDLE, attrs: &Attributes) {
        for (i, t) in INDEXED.iter().enumerate() {
            if let Some(v) = attrs.get(*t) {
                let k = self.key(v);
                self.by_value[i].remove(k, h);
            }
        }
    }

    pub fn insert(&mut self, mut obj: Object) -> CK_OBJECT_HANDLE {
        obj.private = obj.attrs.flag(CKA_PRIVATE);
        if let Some(&h) = self.by_uid.get(&obj.uid) {
            self.replace(h, Arc::new(obj));
            return h;
        }
        self.next += 1;
        let h = self.next;
        self.session_objects += usize::from(!obj.is_token());
        self.by_uid.insert(obj.uid, h);
        self.index(h, &obj.attrs);
        self.by_handle.insert(h, Arc::new(obj));
        h
    }

    /// Put `obj` under handle `h` (which holds an object with the same uid).
    fn replace(&mut self, h: CK_OBJECT_HANDLE, obj: Arc<Object>) {
        if let Some(old) = self.by_handle.get(&h).cloned() {
            self.session_objects -= usize::from(!old.is_token());
            self.session_objects += usize::from(!obj.is_token());
            if INDEXED
                .iter()
                .any(|t| old.attrs.get(*t) != obj.attrs.get(*t))
            {
                self.unindex(h, &old.attrs);
                self.index(h, &obj.attrs);
            }
        } else {
            self.session_objects += usize::from(!obj.is_token());
            self.index(h, &obj.attrs);
        }
        self.by_handle.insert(h, obj);
    }

    pub fn has_session_objects(&self) -> bool {
        self.session_objects > 0
    }

    pub fn get(&self, h: CK_OBJECT_HANDLE) -> Option<Arc<Object>> {
        self.by_handle.get(&h).cloned()
    }

    /// The object with this uid, if it has a handle.
    pub fn by_uid(&self, uid: &Uuid) -> Option<&Arc<Object>> {
        self.by_handle.get(self.by_uid.get(uid)?)
    }

    pub fn handle_of(&self, uid: &Uuid) -> Option<CK_OBJECT_HANDLE> {
        self.by_uid.get(uid).copied()
    }

    pub fn set_attrs(&mut self, h: CK_OBJECT_HANDLE, attrs: Attributes) {
        if let Some(obj) = self.by_handle.get(&h) {
            let o = Object::new(obj.uid, attrs, obj.session);
            self.replace(h, Arc::new(o));
        }
    }

    pub fn remove(&mut self, h: CK_OBJECT_HANDLE) -> Option<Arc<Object>> {
        let obj = self.by_handle.remove(&h)?;
        self.session_objects -= usize::from(!obj.is_token());
        self.by_uid.remove(&obj.uid);
        self.unindex(h, &obj.attrs);
        Some(obj)
    }

    /// Remove every object that `pred` selects; returns what was removed.
    ///
    /// When most objects go (a logout with 100,000 private keys), the table is rebuilt
    /// from those that stay rather than taken apart one entry at a time.
    pub fn remove_where(&mut self, pred: impl Fn(&Object) -> bool) -> Vec<Arc<Object>> {
        let doomed: Vec<CK_OBJECT_HANDLE> = self
            .by_handle
            .iter()
            .filter(|(_, o)| pred(o))
            .map(|(h, _)| *h)
            .collect();
        if doomed.len() <= self.by_handle.len() / 2 {
            return doomed.into_iter().filter_map(|h| self.remove(h)).collect();
        }
        // `pred` once per object: it reads the objects, in memory that is cold by now.
        let doomed: HashSet<CK_OBJECT_HANDLE> = doomed.into_iter().collect();
        let all = std::mem::take(&mut self.by_handle);
        self.by_uid = HashMap::default();
        self.by_value = Default::default();
        self.session_objects = 0;
        let mut removed = Vec::with_capacity(doomed.len());
        for (h, o) in all {
            if doomed.contains(&h) {
                removed.push(o);
            } else {
                self.session_objects += usize::from(!o.is_token());
                self.by_uid.insert(o.uid, h);
                self.index(h, &o.attrs);
                self.by_handle.insert(h, o);
            }
        }
        removed
    }

    /// Remove the token objects with handles up to `upto` that `keep` does not keep
    /// (those given later are newer than what the caller compared them with).
    pub fn prune_token_objects(&mut self, upto: CK_OBJECT_HANDLE, keep: impl Fn(&Object) -> bool) {
        let doomed: Vec<CK_OBJECT_HANDLE> = self
            .by_handle
            .iter()
            .filter(|(h, o)| **h <= upto && o.is_token() && !keep(o))
            .map(|(h, _)| *h)
            .collect();
        for h in doomed {
            self.remove(h);
        }
    }

    pub fn iter(&self) -> impl Iterator<Item = (&CK_OBJECT_HANDLE, &Arc<Object>)> {
        self.by_handle.iter()
    }

    /// The newest handle given so far.
    pub fn last_handle(&self) -> CK_OBJECT_HANDLE {
        self.next
    }

    /// Room for `n` more objects.
    pub fn reserve(&mut self, n: usize) {
        self.by_handle.reserve(n);
        self.by_uid.reserve(n);
        for i in &mut self.by_value {
            i.map.reserve(n);
        }
    }

    pub fn len(&self) -> usize {
        self.by_handle.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_handle.is_empty()
    }

    /// The objects that `template` selects (`Attributes::matches`), in no particular
    /// order. A template naming `CKA_LABEL` or `CKA_ID` is answered from the index;
    /// any other from every object.
    pub fn matching<'a>(
        &'a self,
        template: &'a [(CK_ATTRIBUTE_TYPE, Vec<u8>)],
    ) -> Box<dyn Iterator<Item = (CK_OBJECT_HANDLE, &'a Arc<Object>)> + 'a> {
        let indexed = INDEXED.iter().enumerate().find_map(|(i, t)| {
            template
                .iter()
                .find(|(tt, _)| tt == t)
                .map(|(_, v)| (i, self.key(v)))
        });
        match indexed {
            Some((i, k)) => Box::new(
                self.by_value[i]
                    .get(k)
                    .filter_map(|h| self.by_handle.get(&h).map(|o| (h, o)))
                    .filter(|(_, o)| o.attrs.matches(template)),
            ),
            None => Box::new(
                self.by_handle
                    .iter()
                    .map(|(h, o)| (*h, o))
                    .filter(|(_, o)| o.attrs.matches(template)),
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::token::attribute::{bool_bytes, ulong_bytes};

    fn obj(class: CK_OBJECT_CLASS, label: &str, id: &[u8], private: bool) -> Object {
        let mut a = Attributes::new();
        a.set(CKA_CLASS, ulong_bytes(class));
        a.set(CKA_LABEL, label.as_bytes().to_vec());
        a.set(CKA_ID, id.to_vec());
        a.set(CKA_PRIVATE, bool_bytes(private));
        Object::new(Uuid::new_v4(), a, None)
    }

    fn scan(t: &ObjectTable, template: &[(CK_ATTRIBUTE_TYPE, Vec<u8>)]) -> Vec<CK_OBJECT_HANDLE> {
        let mut v: Vec<_> = t
            .iter()
            .filter(|(_, o)| o.attrs.matches(template))
            .map(|(h, _)| *h)
            .collect();
        v.sort_unstable();
        v
    }

    fn indexed(
        t: &ObjectTable,
        template: &[(CK_ATTRIBUTE_TYPE, Vec<u8>)],
    ) -> Vec<CK_OBJECT_HANDLE> {
        let mut v: Vec<_> = t.matching(template).map(|(h, _)| h).collect();
        v.sort_unstable();
        v
    }

    /// `is_private` follows `CKA_PRIVATE` of what the table holds, however the object's
    /// attributes were set before it was taken.
    #[test]
    fn privacy_follows_the_attributes() {
        let mut t = ObjectTable::default();
        let mut o = obj(CKO_DATA, "p", b"", false);
        o.attrs.set_bool(CKA_PRIVATE, true);
        let h = t.insert(o);
        assert!(t.get(h).unwrap().is_private());
        let mut a = t.get(h).unwrap().attrs.clone();
        a.set_bool(CKA_PRIVATE, false);
        t.set_attrs(h, a);
        assert!(!t.get(h).unwrap().is_private());
        assert_eq!(t.remove_where(|o| o.is_private()).len(), 0);
        let h2 = t.insert(obj(CKO_DATA, "q", b"", true));
        assert!(t.get(h2).unwrap().is_private());
        assert_eq!(t.remove_where(|o| o.is_private()).len(), 1);
    }

    /// The count of session objects that lets `C_CloseSession` skip the scan stays
    /// right through inserts, replacements, removals and both removal paths.
    #[test]
    fn session_objects_are_counted() {
        let mut t = ObjectTable::default();
        assert!(!t.has_session_objects());
        let tok = t.insert(obj(CKO_DATA, "t", b"", false));
        assert!(!t.has_session_objects());
        let mut s = obj(CKO_DATA, "s", b"", false);
        s.session = Some(7);
        let uid = s.uid;
        let h = t.insert(s.clone());
        assert!(t.has_session_objects());
        assert_eq!(t.insert(s), h, "same uid: a replacement");
        let a = t.get(h).unwrap().attrs.clone();
        t.set_attrs(h, a);
        t.remove(h);
        assert!(!t.has_session_objects(), "replacements counted twice");
        // Removal of a few (one by one) and of most (rebuild).
        for n in 0..3u8 {
            let mut s = obj(CKO_DATA, "s", &[n], false);
            s.session = Some(7);
            t.insert(s);
        }
        assert_eq!(
            t.remove_where(|o| o.attrs.get(CKA_ID) == Some(&[0][..]))
                .len(),
            1
        );
        assert!(t.has_session_objects());
        assert_eq!(t.remove_where(|o| !o.is_token()).len(), 2);
        assert!(!t.has_session_objects());
        assert!(t.get(tok).is_some() && t.handle_of(&uid).is_none());
    }

    #[test]
    fn a_bucket_is_no_larger_than_a_vec() {
        assert_eq!(
            std::mem::size_of::<Bucket>(),
            std::mem::size_of::<Vec<CK_OBJECT_HANDLE>>()
        );
    }

    /// Every template the index answers gives what a scan of every object gives,
    /// through inserts, replacements, attribute changes and removals.
    #[test]
    fn index_agrees_with_a_scan() {
        let mut t = ObjectTable::default();
        let mut handles = Vec::new();
        for i in 0..60u32 {
            let class = [CKO_SECRET_KEY, CKO_PRIVATE_KEY, CKO_PUBLIC_KEY, CKO_DATA][i as usize % 4];
            let label = format!("k{}", i % 7);
            let id = [(i % 5) as u8];
            handles.push(t.insert(obj(class, &label, &id, i % 2 == 0)));
        }
        // A label-less object and one with an empty label.
        let mut bare = Attributes::new();
        bare.set(CKA_CLASS, ulong_bytes(CKO_DATA));
        t.insert(Object::new(Uuid::new_v4(), bare, None));
        t.insert(obj(CKO_DATA, "", b"", false));

        let check = |t: &ObjectTable| {
            let mut templates: Vec<Vec<(CK_ATTRIBUTE_TYPE, Vec<u8>)>> = Vec::new();
            for l in ["k0", "k3", "k6", "", "none", "renamed"] {
                templates.push(vec![(CKA_LABEL, l.as_bytes().to_vec())]);
                templates.push(vec![
                    (CKA_CLASS, ulong_bytes(CKO_PRIVATE_KEY)),
                    (CKA_LABEL, l.as_bytes().to_vec()),
                ]);
                templates.push(vec![(CKA_LABEL, l.as_bytes().to_vec()), (CKA_ID, vec![2])]);
            }
            for id in [vec![0u8], vec![4], vec![], vec![9]] {
                templates.push(vec![(CKA_ID, id.clone())]);
                templates.push(vec![(CKA_CLASS, ulong_bytes(CKO_SECRET_KEY)), (CKA_ID, id)]);
            }
            templates.push(vec![(CKA_CLASS, ulong_bytes(CKO_PUBLIC_KEY))]);
            templates.push(vec![]);
            for tpl in &templates {
                assert_eq!(indexed(t, tpl), scan(t, tpl), "template {tpl:?}");
            }
        };
        check(&t);
        assert!(!indexed(&t, &[(CKA_LABEL, b"k3".to_vec())]).is_empty());

        // Re-insert under the same uid with a new label (a reload that saw a change).
        let o = t.get(handles[3]).unwrap();
        let mut changed = (*o).clone();
        changed.attrs.set(CKA_LABEL, b"renamed".to_vec());
        assert_eq!(t.insert(changed), handles[3]);
        // C_SetAttributeValue on another.
        let mut a = t.get(handles[10]).unwrap().attrs.clone();
        a.set(CKA_ID, vec![9]);
        t.set_attrs(handles[10], a);
        check(&t);
        assert_eq!(
            indexed(&t, &[(CKA_LABEL, b"renamed".to_vec())]),
            vec![handles[3]]
        );

        for h in handles.iter().step_by(3) {
            t.remove(*h);
        }
        t.remove_where(|o| o.attrs.get(CKA_LABEL) == Some(b"k1".as_slice()));
        check(&t);
        // Most objects at once (a logout): the table is rebuilt from the rest.
        let before = t.len();
        let kept: Vec<_> = t
            .iter()
            .filter(|(_, o)| o.attrs.get(CKA_ID) == Some([0u8].as_slice()))
            .map(|(h, o)| (*h, o.uid))
            .collect();
        let gone = t.remove_where(|o| o.attrs.get(CKA_ID) != Some([0u8].as_slice()));
        assert!(gone.len() > before / 2 && !kept.is_empty());
        assert_eq!(t.len(), kept.len());
        for (h, uid) in &kept {
            assert_eq!(t.handle_of(uid), Some(*h));
            assert_eq!(t.get(*h).map(|o| o.uid), Some(*uid));
        }
        check(&t);
        let newest = t.last_handle();
        assert!(t.insert(obj(CKO_DATA, "k0", &[0], false)) > newest);
        check(&t);
        assert!(t
            .by_value
            .iter()
            .all(|i| i.map.values().all(|b| b.len() > 0)));
    }
}
