//! Attributes as the token keeps them: type → value bytes in the C layout
//! (`CK_BBOOL` one byte, `CK_ULONG` native), so reading and matching are byte copies.

use crate::error::{Error, Result};
use pkcs11_sys::*;
use std::collections::BTreeMap;

pub type AttrType = CK_ATTRIBUTE_TYPE;

/// A caller's template, parsed from C: duplicates kept in order (the policy rejects them).
pub type Template = Vec<(AttrType, Vec<u8>)>;

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Attributes(BTreeMap<AttrType, Vec<u8>>);

pub const ULONG_LEN: usize = std::mem::size_of::<CK_ULONG>();

pub fn ulong_bytes(v: CK_ULONG) -> Vec<u8> {
    v.to_ne_bytes().to_vec()
}

pub fn bool_bytes(v: bool) -> Vec<u8> {
    vec![v as u8]
}

/// Decode a `CK_BBOOL` template value; a wrong size is `CKR_ATTRIBUTE_VALUE_INVALID`.
pub fn parse_bool(t: AttrType, v: &[u8]) -> Result<bool> {
    match v {
        [b] => Ok(*b != 0),
        _ => Err(Error::attr_value(t, "expected a one-byte CK_BBOOL")),
    }
}

pub fn parse_ulong(t: AttrType, v: &[u8]) -> Result<CK_ULONG> {
    let arr: [u8; ULONG_LEN] = v
        .try_into()
        .map_err(|_| Error::attr_value(t, "expected a CK_ULONG"))?;
    Ok(CK_ULONG::from_ne_bytes(arr))
}

impl Attributes {
    pub fn new() -> Attributes {
        Attributes(BTreeMap::new())
    }

    pub fn get(&self, t: AttrType) -> Option<&[u8]> {
        self.0.get(&t).map(|v| v.as_slice())
    }

    pub fn contains(&self, t: AttrType) -> bool {
        self.0.contains_key(&t)
    }

    pub fn set(&mut self, t: AttrType, v: Vec<u8>) {
        self.0.insert(t, v);
    }

    pub fn set_bool(&mut self, t: AttrType, v: bool) {
        self.0.insert(t, bool_bytes(v));
    }

    pub fn set_ulong(&mut self, t: AttrType, v: CK_ULONG) {
        self.0.insert(t, ulong_bytes(v));
    }

    pub fn remove(&mut self, t: AttrType) {
        self.0.remove(&t);
    }

    /// A boolean attribute; absent or malformed reads as `false`.
    pub fn flag(&self, t: AttrType) -> bool {
        matches!(self.get(t), Some([b]) if *b != 0)
    }

    pub fn ulong(&self, t: AttrType) -> Option<CK_ULONG> {
        self.get(t).and_then(|v| parse_ulong(t, v).ok())
    }

    pub fn class(&self) -> CK_OBJECT_CLASS {
        self.ulong(CKA_CLASS).unwrap_or(CK_UNAVAILABLE_INFORMATION)
    }

    pub fn key_type(&self) -> Option<CK_KEY_TYPE> {
        self.ulong(CKA_KEY_TYPE)
    }

    pub fn iter(&self) -> impl Iterator<Item = (&AttrType, &Vec<u8>)> {
        self.0.iter()
    }

    /// Every template entry has the same value here (what `C_FindObjects` matches).
    pub fn matches(&self, template: &[(AttrType, Vec<u8>)]) -> bool {
        template
            .iter()
            .all(|(t, v)| self.get(*t).is_some_and(|mine| mine == v.as_slice()))
    }

    /// Encoding for the instance store.
    pub fn encode(&self) -> Result<Vec<u8>> {
        let pairs: Vec<(u64, &[u8])> = self.0.iter().map(|(t, v)| (*t, v.as_slice())).collect();
        postcard::to_allocvec(&pairs).map_err(|e| Error::general(format!("encode attributes: {e}")))
    }

    /// Inverse of `encode`; never panics on garbage (the store may be damaged).
    pub fn decode(bytes: &[u8]) -> Result<Attributes> {
        let pairs: Vec<(u64, Vec<u8>)> = postcard::from_bytes(bytes)
            .map_err(|e| Error::device(format!("corrupt stored attributes: {e}")))?;
        Ok(Attributes(
            pairs.into_iter().map(|(t, v)| (t as AttrType, v)).collect(),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encode_round_trip_and_garbage() {
        let mut a = Attributes::new();
        a.set_ulong(CKA_CLASS, CKO_SECRET_KEY);
        a.set_bool(CKA_TOKEN, true);
        a.set(CKA_LABEL, b"k".to_vec());
        assert_eq!(Attributes::decode(&a.encode().unwrap()).unwrap(), a);
        assert!(Attributes::decode(&[0xff, 0xff, 0xff, 0xff, 0xff, 0x0f]).is_err());
    }

    #[test]
    fn matching_is_exact() {
        let mut a = Attributes::new();
        a.set(CKA_LABEL, b"abc".to_vec());
        assert!(a.matches(&[(CKA_LABEL, b"abc".to_vec())]));
        assert!(!a.matches(&[(CKA_LABEL, b"ab".to_vec())]));
        assert!(!a.matches(&[(CKA_ID, vec![])]));
        assert!(a.matches(&[]));
    }
}
