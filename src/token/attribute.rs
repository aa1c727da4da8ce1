//! Attributes as the token keeps them: type → value bytes in the C layout
//! (`CK_BBOOL` one byte, `CK_ULONG` native), so reading and matching are byte copies.
//!
//! An object's attributes live in one allocation: a sorted table of types, the end of
//! each value, then the values back to back. Decoding a stored object is one pass and
//! one allocation (a tree of separately allocated values cost 29 allocations per key
//! and about 2 KiB; with 100,000 keys that was most of login and of logout).

use crate::error::{Error, Result};
use pkcs11_sys::*;

pub type AttrType = CK_ATTRIBUTE_TYPE;

/// A caller's template, parsed from C: duplicates kept in order (the policy rejects them).
pub type Template = Vec<(AttrType, Vec<u8>)>;

/// The attributes of one object: at most one value per type.
///
/// Layout of `buf` (empty: no attributes): a `u32` header (the count, with `WIDE` set
/// when some type or the values' total length does not fit in 32 bits), the types in
/// ascending order, the end of each value relative to the first value (types and ends
/// `u32` each, `u64` when `WIDE`), then the values.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Attributes {
    buf: Box<[u8]>,
}

pub const ULONG_LEN: usize = std::mem::size_of::<CK_ULONG>();

/// Header bit: types and ends are stored as `u64`.
const WIDE: u32 = 1 << 31;

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

fn read_u32(b: &[u8], at: usize) -> u32 {
    let mut a = [0u8; 4];
    a.copy_from_slice(&b[at..at + 4]);
    u32::from_ne_bytes(a)
}

fn read_u64(b: &[u8], at: usize) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[at..at + 8]);
    u64::from_ne_bytes(a)
}

/// Collects attributes and packs them once: building a set of N attributes with
/// `Attributes::set` repacks it N times.
#[derive(Default)]
pub struct AttributesBuilder {
    /// (type, end of its value in `data`), in the order given.
    entries: Vec<(AttrType, usize)>,
    data: Vec<u8>,
}

impl AttributesBuilder {
    pub fn new() -> AttributesBuilder {
        AttributesBuilder {
            entries: Vec::with_capacity(32),
            data: Vec::with_capacity(64),
        }
    }

    /// Adds `t`; a later value for the same type replaces an earlier one.
    pub fn set(&mut self, t: AttrType, v: &[u8]) {
        self.data.extend_from_slice(v);
        self.entries.push((t, self.data.len()));
    }

    pub fn set_bool(&mut self, t: AttrType, v: bool) {
        self.set(t, &[v as u8]);
    }

    pub fn set_ulong(&mut self, t: AttrType, v: CK_ULONG) {
        self.set(t, &v.to_ne_bytes());
    }

    pub fn build(self) -> Attributes {
        let mut spans: Vec<(AttrType, std::ops::Range<usize>)> =
            Vec::with_capacity(self.entries.len());
        let mut start = 0;
        for (t, end) in self.entries {
            spans.push((t, start..end));
            start = end;
        }
        // Stable sort, then keep the last value given for each type.
        spans.sort_by_key(|(t, _)| *t);
        let mut sorted: Vec<(AttrType, &[u8])> = Vec::with_capacity(spans.len());
        for (t, r) in spans {
            match sorted.last_mut() {
                Some(last) if last.0 == t => last.1 = &self.data[r],
                _ => sorted.push((t, &self.data[r])),
            }
        }
        Attributes::from_sorted(&sorted)
    }
}

impl Attributes {
    pub fn new() -> Attributes {
        Attributes::default()
    }

    /// Build from entries sorted by type, without duplicates.
    fn from_sorted(entries: &[(AttrType, &[u8])]) -> Attributes {
        if entries.is_empty() {
            return Attributes::default();
        }
        let n = entries.len();
        let data: usize = entries.iter().map(|(_, v)| v.len()).sum();
        let wide =
            u32::try_from(data).is_err() || entries.iter().any(|(t, _)| u32::try_from(*t).is_err());
        let size = if wide { 8 } else { 4 };
        let mut buf = Vec::with_capacity(4 + n * 2 * size + data);
        buf.extend_from_slice(&(n as u32 | if wide { WIDE } else { 0 }).to_ne_bytes());
        for (t, _) in entries {
            if wide {
                let t: u64 = *t;
                buf.extend_from_slice(&t.to_ne_bytes());
            } else {
                buf.extend_from_slice(&(*t as u32).to_ne_bytes());
            }
        }
        let mut end = 0usize;
        for (_, v) in entries {
            end += v.len();
            if wide {
                buf.extend_from_slice(&(end as u64).to_ne_bytes());
            } else {
                buf.extend_from_slice(&(end as u32).to_ne_bytes());
            }
        }
        for (_, v) in entries {
            buf.extend_from_slice(v);
        }
        Attributes {
            buf: buf.into_boxed_slice(),
        }
    }

    /// (count, types and ends are u64)
    fn header(&self) -> (usize, bool) {
        if self.buf.len() < 4 {
            return (0, false);
        }
        let h = read_u32(&self.buf, 0);
        ((h & !WIDE) as usize, h & WIDE != 0)
    }

    /// How many attributes there are.
    pub fn len(&self) -> usize {
        self.header().0
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn type_at(&self, i: usize, wide: bool) -> AttrType {
        if wide {
            read_u64(&self.buf, 4 + 8 * i) as AttrType
        } else {
            read_u32(&self.buf, 4 + 4 * i) as AttrType
        }
    }

    /// Where in `buf` the value of entry `i` of `n` is.
    fn span(&self, i: usize, n: usize, wide: bool) -> std::ops::Range<usize> {
        let size = if wide { 8 } else { 4 };
        let ends = 4 + n * size;
        let data = ends + n * size;
        let end_of = |j: usize| {
            if wide {
                read_u64(&self.buf, ends + 8 * j) as usize
            } else {
                read_u32(&self.buf, ends + 4 * j) as usize
            }
        };
        let start = if i == 0 { 0 } else { end_of(i - 1) };
        data + start..data + end_of(i)
    }

    /// The value of entry `i` of `n`.
    fn value_at(&self, i: usize, n: usize, wide: bool) -> &[u8] {
        &self.buf[self.span(i, n, wide)]
    }

    /// The index of type `t`, or where it would go.
    fn position(&self, t: AttrType) -> std::result::Result<usize, usize> {
        let (n, wide) = self.header();
        let (mut lo, mut hi) = (0, n);
        while lo < hi {
            let mid = (lo + hi) / 2;
            match self.type_at(mid, wide).cmp(&t) {
                std::cmp::Ordering::Less => lo = mid + 1,
                std::cmp::Ordering::Greater => hi = mid,
                std::cmp::Ordering::Equal => return Ok(mid),
            }
        }
        Err(lo)
    }

    pub fn get(&self, t: AttrType) -> Option<&[u8]> {
        let (n, wide) = self.header();
        let i = self.position(t).ok()?;
        Some(self.value_at(i, n, wide))
    }

    pub fn contains(&self, t: AttrType) -> bool {
        self.position(t).is_ok()
    }

    pub fn set(&mut self, t: AttrType, v: Vec<u8>) {
        self.put(t, &v);
    }

    fn put(&mut self, t: AttrType, v: &[u8]) {
        let (n, wide) = self.header();
        match self.position(t) {
            Ok(i) if self.value_at(i, n, wide).len() == v.len() => {
                // Same length: overwrite in place.
                let at = self.span(i, n, wide);
                self.buf[at].copy_from_slice(v);
            }
            Ok(i) => {
                let mut e: Vec<(AttrType, &[u8])> = self.iter().collect();
                e[i].1 = v;
                *self = Attributes::from_sorted(&e);
            }
            Err(i) => {
                let mut e: Vec<(AttrType, &[u8])> = Vec::with_capacity(n + 1);
                e.extend(self.iter());
                e.insert(i, (t, v));
                *self = Attributes::from_sorted(&e);
            }
        }
    }

    pub fn set_bool(&mut self, t: AttrType, v: bool) {
        self.put(t, &[v as u8]);
    }

    pub fn set_ulong(&mut self, t: AttrType, v: CK_ULONG) {
        self.put(t, &v.to_ne_bytes());
    }

    pub fn remove(&mut self, t: AttrType) {
        if let Ok(i) = self.position(t) {
            let mut e: Vec<(AttrType, &[u8])> = self.iter().collect();
            e.remove(i);
            *self = Attributes::from_sorted(&e);
        }
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

    /// Every attribute, in ascending order of type.
    pub fn iter(&self) -> impl Iterator<Item = (AttrType, &[u8])> + '_ {
        let (n, wide) = self.header();
        (0..n).map(move |i| (self.type_at(i, wide), self.value_at(i, n, wide)))
    }

    /// Bytes held for this object's attributes (what `C_GetObjectSize` reports).
    pub fn footprint(&self) -> usize {
        self.buf.len()
    }

    /// Every template entry has the same value here (what `C_FindObjects` matches).
    pub fn matches(&self, template: &[(AttrType, Vec<u8>)]) -> bool {
        template
            .iter()
            .all(|(t, v)| self.get(*t).is_some_and(|mine| mine == v.as_slice()))
    }

    /// Encoding for the instance store: postcard's encoding of `Vec<(u64, Vec<u8>)>`
    /// in ascending order of type (what every earlier version wrote and reads).
    pub fn encode(&self) -> Result<Vec<u8>> {
        let (n, _) = self.header();
        let mut out = Vec::with_capacity(self.buf.len() + 2 * n + 2);
        put_varint(&mut out, n as u64);
        for (t, v) in self.iter() {
            put_varint(&mut out, t);
            put_varint(&mut out, v.len() as u64);
            out.extend_from_slice(v);
        }
        Ok(out)
    }

    /// Inverse of `encode`; never panics on garbage (the store may be damaged). A type
    /// given twice keeps its last value, as a map built from the pairs would.
    pub fn decode(bytes: &[u8]) -> Result<Attributes> {
        let corrupt = |what: &str| Error::device(format!("corrupt stored attributes: {what}"));
        let mut r = Reader { b: bytes, at: 0 };
        let n = r.varint().ok_or_else(|| corrupt("count"))?;
        // Every pair takes at least two bytes.
        if n > (bytes.len() as u64) / 2 {
            return Err(corrupt("count beyond the data"));
        }
        let mut entries: Vec<(AttrType, &[u8])> = Vec::with_capacity(n as usize);
        let mut sorted = true;
        for _ in 0..n {
            let t = r.varint().ok_or_else(|| corrupt("type"))?;
            let len = r.varint().ok_or_else(|| corrupt("length"))?;
            let v = r
                .take(len)
                .ok_or_else(|| corrupt("value beyond the data"))?;
            let t = AttrType::try_from(t).map_err(|_| corrupt("type"))?;
            if let Some((last, _)) = entries.last() {
                sorted &= *last < t;
            }
            entries.push((t, v));
        }
        if !sorted {
            // Stable: of equal types the last comes last, and is the one kept.
            entries.sort_by_key(|(t, _)| *t);
            let mut keep: Vec<(AttrType, &[u8])> = Vec::with_capacity(entries.len());
            for e in entries {
                match keep.last_mut() {
                    Some(last) if last.0 == e.0 => *last = e,
                    _ => keep.push(e),
                }
            }
            entries = keep;
        }
        Ok(Attributes::from_sorted(&entries))
    }
}

impl std::fmt::Debug for Attributes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_map()
            .entries(
                self.iter()
                    .map(|(t, v)| (format!("0x{t:x}"), hex::encode(v))),
            )
            .finish()
    }
}

/// LEB128, as postcard writes integers.
fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push(v as u8 | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

struct Reader<'a> {
    b: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    /// A LEB128 `u64` of at most ten bytes whose value fits (postcard's rule).
    fn varint(&mut self) -> Option<u64> {
        let mut v = 0u64;
        for i in 0..10 {
            let byte = *self.b.get(self.at)?;
            self.at += 1;
            if i == 9 && byte > 1 {
                return None;
            }
            v |= u64::from(byte & 0x7f) << (7 * i);
            if byte & 0x80 == 0 {
                return Some(v);
            }
        }
        None
    }

    fn take(&mut self, len: u64) -> Option<&'a [u8]> {
        let len = usize::try_from(len).ok()?;
        let end = self.at.checked_add(len)?;
        let v = self.b.get(self.at..end)?;
        self.at = end;
        Some(v)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    /// The builder gives what setting one attribute at a time gives, later values winning.
    #[test]
    fn builder_equals_one_set_at_a_time() {
        let entries: [(AttrType, &[u8]); 7] = [
            (CKA_LABEL, b"first"),
            (CKA_CLASS, &[4, 0, 0, 0, 0, 0, 0, 0]),
            (CKA_TOKEN, &[1]),
            (CKA_LABEL, b""),
            (CKA_ID, b"\x00\x01"),
            (CKA_TOKEN, &[0]),
            (CKA_LABEL, b"last"),
        ];
        let mut one = Attributes::new();
        let mut b = AttributesBuilder::new();
        for (t, v) in entries {
            one.set(t, v.to_vec());
            b.set(t, v);
        }
        let built = b.build();
        assert_eq!(built, one);
        assert_eq!(built.get(CKA_LABEL), Some(&b"last"[..]));
        assert!(!built.flag(CKA_TOKEN));
        assert_eq!(built.len(), 4);
        assert!(AttributesBuilder::new().build().is_empty());
    }

    #[test]
    fn encode_round_trip_and_garbage() {
        let mut a = Attributes::new();
        a.set_ulong(CKA_CLASS, CKO_SECRET_KEY);
        a.set_bool(CKA_TOKEN, true);
        a.set(CKA_LABEL, b"k".to_vec());
        assert_eq!(Attributes::decode(&a.encode().unwrap()).unwrap(), a);
        assert!(Attributes::decode(&[0xff, 0xff, 0xff, 0xff, 0xff, 0x0f]).is_err());
        assert!(Attributes::decode(&[]).is_err());
        assert_eq!(Attributes::decode(&[0]).unwrap(), Attributes::new());
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

    /// Tiny deterministic generator for the tests below.
    struct Rng(u64);
    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }
        fn below(&mut self, n: u64) -> u64 {
            self.next() % n
        }
    }

    fn random_type(r: &mut Rng) -> AttrType {
        match r.below(4) {
            0 => r.below(0x20) as AttrType,
            1 => CKA_VENDOR_DEFINED + r.below(8) as AttrType,
            2 => CKA_WRAP_TEMPLATE,
            _ => r.below(0x1300) as AttrType,
        }
    }

    /// Sets, overwrites and removals agree with a map; the encoding is postcard's.
    #[test]
    fn behaves_as_a_map_and_encodes_as_postcard() {
        let mut r = Rng(0x9e37_79b9_7f4a_7c15);
        for round in 0..300 {
            let mut a = Attributes::new();
            let mut m: BTreeMap<AttrType, Vec<u8>> = BTreeMap::new();
            for _ in 0..r.below(40) {
                let t = random_type(&mut r);
                match r.below(5) {
                    0 => {
                        a.remove(t);
                        m.remove(&t);
                    }
                    1 => {
                        let b = r.below(2) == 1;
                        a.set_bool(t, b);
                        m.insert(t, vec![b as u8]);
                    }
                    _ => {
                        let v: Vec<u8> = (0..r.below(if round % 7 == 0 { 300 } else { 12 }))
                            .map(|_| r.next() as u8)
                            .collect();
                        a.set(t, v.clone());
                        m.insert(t, v);
                    }
                }
            }
            if round % 10 == 0 {
                // A type beyond 32 bits.
                a.set(1 << 40, vec![7]);
                m.insert(1 << 40, vec![7]);
            }
            assert_eq!(a.len(), m.len());
            let mine: Vec<(AttrType, Vec<u8>)> = a.iter().map(|(t, v)| (t, v.to_vec())).collect();
            let want: Vec<(AttrType, Vec<u8>)> = m.clone().into_iter().collect();
            assert_eq!(mine, want);
            for t in 0..0x30 {
                assert_eq!(a.get(t), m.get(&t).map(|v| v.as_slice()));
            }
            let pairs: Vec<(u64, &[u8])> = m.iter().map(|(t, v)| (*t, v.as_slice())).collect();
            let enc = a.encode().unwrap();
            assert_eq!(enc, postcard::to_allocvec(&pairs).unwrap());
            assert_eq!(Attributes::decode(&enc).unwrap(), a);
        }
    }

    /// What postcard decodes as pairs decodes here to the same map (later duplicates
    /// win, any order); what it rejects is rejected here too.
    #[test]
    fn decodes_what_postcard_decodes() {
        let mut r = Rng(42);
        for round in 0..3000 {
            let pairs: Vec<(u64, Vec<u8>)> = (0..r.below(12))
                .map(|_| {
                    let t = if r.below(3) == 0 {
                        r.below(6)
                    } else {
                        r.next() >> r.below(64)
                    };
                    (t, (0..r.below(5)).map(|_| r.next() as u8).collect())
                })
                .collect();
            let mut bytes = postcard::to_allocvec(&pairs).unwrap();
            if round % 2 == 1 && !bytes.is_empty() {
                let i = r.below(bytes.len() as u64) as usize;
                bytes[i] = r.next() as u8;
                if r.below(3) == 0 {
                    bytes.truncate(i);
                }
            }
            let theirs: std::result::Result<Vec<(u64, Vec<u8>)>, _> = postcard::from_bytes(&bytes);
            let mine = Attributes::decode(&bytes);
            match theirs {
                Ok(p) => {
                    let m: BTreeMap<AttrType, Vec<u8>> = p.into_iter().collect();
                    let a = mine.expect("postcard decoded it");
                    let got: Vec<(AttrType, Vec<u8>)> =
                        a.iter().map(|(t, v)| (t, v.to_vec())).collect();
                    assert_eq!(got, m.into_iter().collect::<Vec<_>>());
                }
                Err(_) => assert!(mine.is_err(), "{bytes:?}"),
            }
        }
    }
}
