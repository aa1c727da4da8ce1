//! Object handles: the process-local table from `CK_OBJECT_HANDLE` to objects.
//! Handles are never reused, so a stale handle cannot name another object.

use super::attribute::Attributes;
use pkcs11_sys::*;
use std::collections::HashMap;
use std::sync::Arc;
use uuid::Uuid;

#[derive(Clone, Debug)]
pub struct Object {
    pub uid: Uuid,
    pub attrs: Attributes,
    /// The session that owns a session object; `None` for token objects.
    pub session: Option<CK_SESSION_HANDLE>,
    /// The key id (`CKA_CKS_KEY_ID`), shared with audit records without copying.
    pub key_id: Option<Arc<str>>,
}

impl Object {
    pub fn new(uid: Uuid, attrs: Attributes, session: Option<CK_SESSION_HANDLE>) -> Object {
        let key_id = attrs
            .get(super::policy::CKA_CKS_KEY_ID)
            .and_then(|v| std::str::from_utf8(v).ok())
            .map(Arc::from);
        Object {
            uid,
            attrs,
            session,
            key_id,
        }
    }

    pub fn is_token(&self) -> bool {
        self.session.is_none()
    }

    pub fn is_private(&self) -> bool {
        self.attrs.flag(CKA_PRIVATE)
    }
}

#[derive(Default)]
pub struct ObjectTable {
    by_handle: HashMap<CK_OBJECT_HANDLE, Arc<Object>>,
    by_uid: HashMap<Uuid, CK_OBJECT_HANDLE>,
    next: CK_OBJECT_HANDLE,
}

impl ObjectTable {
    pub fn insert(&mut self, obj: Object) -> CK_OBJECT_HANDLE {
        if let Some(&h) = self.by_uid.get(&obj.uid) {
            self.by_handle.insert(h, Arc::new(obj));
            return h;
        }
        self.next += 1;
        let h = self.next;
        self.by_uid.insert(obj.uid, h);
        self.by_handle.insert(h, Arc::new(obj));
        h
    }

    pub fn get(&self, h: CK_OBJECT_HANDLE) -> Option<Arc<Object>> {
        self.by_handle.get(&h).cloned()
    }

    pub fn handle_of(&self, uid: &Uuid) -> Option<CK_OBJECT_HANDLE> {
        self.by_uid.get(uid).copied()
    }

    pub fn set_attrs(&mut self, h: CK_OBJECT_HANDLE, attrs: Attributes) {
        if let Some(obj) = self.by_handle.get_mut(&h) {
            let mut o = (**obj).clone();
            o.attrs = attrs;
            *obj = Arc::new(o);
        }
    }

    pub fn remove(&mut self, h: CK_OBJECT_HANDLE) -> Option<Arc<Object>> {
        let obj = self.by_handle.remove(&h)?;
        self.by_uid.remove(&obj.uid);
        Some(obj)
    }

    /// Remove every object that `pred` selects; returns what was removed.
    pub fn remove_where(&mut self, pred: impl Fn(&Object) -> bool) -> Vec<Arc<Object>> {
        let doomed: Vec<CK_OBJECT_HANDLE> = self
            .by_handle
            .iter()
            .filter(|(_, o)| pred(o))
            .map(|(h, _)| *h)
            .collect();
        doomed.into_iter().filter_map(|h| self.remove(h)).collect()
    }

    pub fn iter(&self) -> impl Iterator<Item = (&CK_OBJECT_HANDLE, &Arc<Object>)> {
        self.by_handle.iter()
    }
}
