//! Searches that name `CKA_LABEL` or `CKA_ID` are answered from an index of the object
//! table; every other search reads every object. Both must give the same objects:
//! here each indexed search is compared with a search by an unindexed template (the
//! whole token) filtered by reading the attributes, across classes, private and public
//! objects, token and session objects, shared labels and ids, attribute changes,
//! destruction, a user who is not logged in, and rotated keys (whose older versions
//! another process relabels; the current version must come first).

mod common;

use cryptoki::mechanism::Mechanism;
use cryptoki::object::{Attribute, AttributeType, KeyType, ObjectClass, ObjectHandle};
use cryptoki::session::Session;
use std::collections::BTreeSet;
use std::process::Command;

const CKS: &str = env!("CARGO_BIN_EXE_cks");
const CHILD: &str = "CKS_FIND_INDEX_CHILD";
const P256: [u8; 10] = [0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07];

/// Class, label and id of an object (absent attributes as `None`).
fn describe(s: &Session, h: ObjectHandle) -> (u64, Option<Vec<u8>>, Option<Vec<u8>>) {
    let attrs = s
        .get_attributes(
            h,
            &[
                AttributeType::Class,
                AttributeType::Label,
                AttributeType::Id,
            ],
        )
        .expect("read class, label, id");
    let (mut class, mut label, mut id) = (u64::MAX, None, None);
    for a in attrs {
        match a {
            Attribute::Class(c) => class = u64::from(c),
            Attribute::Label(l) => label = Some(l),
            Attribute::Id(i) => id = Some(i),
            _ => {}
        }
    }
    (class, label, id)
}

/// What a search must find: every visible object (an empty template reads them all,
/// no index), filtered here.
fn by_scan(
    s: &Session,
    class: Option<ObjectClass>,
    label: Option<&[u8]>,
    id: Option<&[u8]>,
) -> BTreeSet<u64> {
    s.find_objects(&[])
        .expect("find all")
        .into_iter()
        .filter(|h| {
            let (c, l, i) = describe(s, *h);
            class.is_none_or(|want| u64::from(want) == c)
                && label.is_none_or(|want| l.as_deref() == Some(want))
                && id.is_none_or(|want| i.as_deref() == Some(want))
        })
        .map(|h| h.handle())
        .collect()
}

fn template(class: Option<ObjectClass>, label: Option<&[u8]>, id: Option<&[u8]>) -> Vec<Attribute> {
    let mut t = Vec::new();
    if let Some(c) = class {
        t.push(Attribute::Class(c));
    }
    if let Some(l) = label {
        t.push(Attribute::Label(l.to_vec()));
    }
    if let Some(i) = id {
        t.push(Attribute::Id(i.to_vec()));
    }
    t
}

/// A label and an id to search by (`None`: not in the template).
type LabelAndId<'a> = (Option<&'a [u8]>, Option<&'a [u8]>);

/// Every combination of class, label and id over `labels` and `ids`: the indexed
/// search finds exactly what the scan finds. Returns how many searches found something.
fn compare_all(s: &Session, labels: &[&[u8]], ids: &[&[u8]]) -> usize {
    let classes = [
        None,
        Some(ObjectClass::SECRET_KEY),
        Some(ObjectClass::PRIVATE_KEY),
        Some(ObjectClass::PUBLIC_KEY),
        Some(ObjectClass::DATA),
    ];
    let mut nonempty = 0;
    for class in classes {
        let mut cases: Vec<LabelAndId> = Vec::new();
        for l in labels {
            cases.push((Some(l), None));
            for i in ids {
                cases.push((Some(l), Some(i)));
            }
        }
        for i in ids {
            cases.push((None, Some(i)));
        }
        for (label, id) in cases {
            let found = s
                .find_objects(&template(class, label, id))
                .expect("indexed find");
            let set: BTreeSet<u64> = found.iter().map(|h| h.handle()).collect();
            assert_eq!(set.len(), found.len(), "a handle found twice");
            let want = by_scan(s, class, label, id);
            assert_eq!(
                set,
                want,
                "class {class:?} label {:?} id {id:?}",
                label.map(String::from_utf8_lossy)
            );
            nonempty += usize::from(!set.is_empty());
        }
    }
    nonempty
}

fn aes(s: &Session, token: bool, private: bool, label: &[u8], id: Option<&[u8]>) -> ObjectHandle {
    let mut t = vec![
        Attribute::Class(ObjectClass::SECRET_KEY),
        Attribute::KeyType(KeyType::AES),
        Attribute::ValueLen(32u64.into()),
        Attribute::Token(token),
        Attribute::Private(private),
        Attribute::Encrypt(true),
        Attribute::Decrypt(true),
        Attribute::Label(label.to_vec()),
    ];
    if let Some(i) = id {
        t.push(Attribute::Id(i.to_vec()));
    }
    s.generate_key(&Mechanism::AesKeyGen, &t)
        .expect("generate AES key")
}

fn data(s: &Session, token: bool, private: bool, label: &[u8]) -> ObjectHandle {
    let t = vec![
        Attribute::Class(ObjectClass::DATA),
        Attribute::Token(token),
        Attribute::Private(private),
        Attribute::Label(label.to_vec()),
        Attribute::Value(b"v".to_vec()),
    ];
    s.create_object(&t).expect("create data object")
}

const LABELS: [&[u8]; 7] = [
    b"idx-shared",
    b"idx-aes",
    b"idx-ec",
    b"idx-public",
    b"",
    b"idx-renamed",
    b"idx-none",
];
const IDS: [&[u8]; 5] = [b"id-1", b"id-2", b"id-ec", b"", b"id-none"];

#[test]
fn indexed_find_agrees_with_a_scan() {
    if std::env::var(CHILD).is_ok() {
        return;
    }
    let c = common::ctx();
    let s = c.session();
    // One label and one id across classes, token and session, private and public.
    aes(&s, true, true, b"idx-shared", Some(b"id-1"));
    aes(&s, false, true, b"idx-shared", Some(b"id-1"));
    aes(&s, true, true, b"idx-aes", Some(b"id-2"));
    let moved = aes(&s, false, true, b"idx-aes", Some(b"id-2"));
    data(&s, true, false, b"idx-shared");
    data(&s, true, true, b"idx-shared");
    data(&s, false, false, b"idx-public");
    aes(&s, false, false, b"idx-public", Some(b"id-2"));
    data(&s, true, false, b"");
    aes(&s, false, false, b"", Some(b""));
    let (public, _private) = s
        .generate_key_pair(
            &Mechanism::EccKeyPairGen,
            &[
                Attribute::Token(true),
                Attribute::EcParams(P256.to_vec()),
                Attribute::Label(b"idx-ec".to_vec()),
                Attribute::Id(b"id-ec".to_vec()),
            ],
            &[
                Attribute::Token(true),
                Attribute::Label(b"idx-ec".to_vec()),
                Attribute::Id(b"id-ec".to_vec()),
            ],
        )
        .expect("EC pair");
    // Many objects under one id: the index keeps them in a set past a few.
    for n in 0..40 {
        aes(
            &s,
            false,
            n % 2 == 0,
            format!("idx-many-{n}").as_bytes(),
            Some(b"id-1"),
        );
    }
    assert!(compare_all(&s, &LABELS, &IDS) > 20);

    // Attribute changes move objects in the index.
    s.update_attributes(public, &[Attribute::Label(b"idx-renamed".to_vec())])
        .expect("relabel the public key");
    s.update_attributes(moved, &[Attribute::Id(b"id-1".to_vec())])
        .expect("change an id");
    compare_all(&s, &LABELS, &IDS);
    assert_eq!(
        s.find_objects(&[Attribute::Label(b"idx-renamed".to_vec())])
            .expect("find"),
        vec![public]
    );

    // Destroyed objects leave the index; so do session objects when their session closes.
    for h in s
        .find_objects(&[
            Attribute::Class(ObjectClass::SECRET_KEY),
            Attribute::Token(false),
            Attribute::Id(b"id-1".to_vec()),
        ])
        .expect("find")
        .into_iter()
        .step_by(3)
    {
        s.destroy_object(h).expect("destroy");
    }
    let other = c.session();
    aes(&other, false, false, b"idx-shared", Some(b"id-2"));
    compare_all(&s, &LABELS, &IDS);
    drop(other);
    compare_all(&s, &LABELS, &IDS);

    // Without the user logged in (another process), private objects are neither found
    // nor listed.
    let (ok, out) = common::run_child(
        "public_child",
        &[
            (CHILD, "public"),
            ("CKS_CONFIG", c.dir.join("cks.toml").to_str().expect("path")),
        ],
    );
    assert!(ok, "public search in a child failed:\n{out}");
}

/// In a child process: a public session (nobody logged in here).
#[test]
fn public_child() {
    if std::env::var(CHILD).as_deref() != Ok("public") {
        return;
    }
    let pkcs11 = cryptoki::context::Pkcs11::new(common::module_path()).expect("load");
    pkcs11
        .initialize(cryptoki::context::CInitializeArgs::new(
            cryptoki::context::CInitializeFlags::OS_LOCKING_OK,
        ))
        .expect("C_Initialize");
    let slot = pkcs11.get_all_slots().expect("slots")[0];
    let s = pkcs11.open_rw_session(slot).expect("session");
    assert!(compare_all(&s, &LABELS, &IDS) > 0);
    let private = s
        .find_objects(&[Attribute::Label(b"idx-shared".to_vec())])
        .expect("find")
        .into_iter()
        .filter(|h| {
            s.get_attributes(*h, &[AttributeType::Private])
                .expect("read CKA_PRIVATE")
                .iter()
                .any(|a| matches!(a, Attribute::Private(true)))
        })
        .count();
    assert_eq!(private, 0, "a private object was found without login");
}

/// Rotation adds versions with the CMK's `CKA_ID`; another process relabels the older
/// ones. The index follows, and the current version is found first.
#[test]
fn rotated_keys_found_by_label_and_id() {
    if std::env::var(CHILD).is_ok() {
        return;
    }
    let c = common::ctx();
    let s = c.session();
    let key = aes(&s, true, true, b"alias/idx-rot", None);
    let key_id = {
        let v = s
            .get_attributes(key, &[AttributeType::Id])
            .expect("read CKA_ID");
        match v.first() {
            Some(Attribute::Id(i)) => i.clone(),
            _ => panic!("no CKA_ID"),
        }
    };
    for version in 2..=3 {
        let out = Command::new(CKS)
            .args(["key", "rotate", "alias/idx-rot"])
            .env("CKS_CONFIG", c.dir.join("cks.toml"))
            .env("CKS_PIN", common::USER_PIN)
            .env_remove("CKS_LOG")
            .output()
            .expect("run cks key rotate");
        assert!(
            out.status.success(),
            "cks key rotate: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let by_id = s
            .find_objects(&[Attribute::Id(key_id.clone())])
            .expect("find by id");
        assert_eq!(by_id.len(), version, "one object per version");
        let want = by_scan(&s, None, None, Some(&key_id));
        assert_eq!(
            by_id.iter().map(|h| h.handle()).collect::<BTreeSet<_>>(),
            want
        );
        let current = s
            .find_objects(&[Attribute::Label(b"alias/idx-rot".to_vec())])
            .expect("find by label");
        assert_eq!(current.len(), 1, "the label names the current version only");
        assert_eq!(by_id[0], current[0], "the current version comes first");
        let labels: Vec<Vec<u8>> = by_id[1..]
            .iter()
            .map(|h| describe(&s, *h).1.expect("label"))
            .collect();
        for l in &labels {
            assert!(l.starts_with(b"alias/idx-rot#v"), "old labels step aside");
            let mut refs: Vec<&[u8]> = vec![l.as_slice()];
            refs.push(b"alias/idx-rot");
            compare_all(&s, &refs, &[key_id.as_slice()]);
        }
    }
}
