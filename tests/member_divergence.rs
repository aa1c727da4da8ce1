//! Members that disagree: the token reads the first healthy member in full and only the
//! object ids and record generations of the others. What one member lacks, or holds
//! damaged, must still show from another: an object missing on the first member, a key
//! record damaged there (with a higher generation than the good copy elsewhere), and an
//! object whose stored attributes are damaged there. Each key stays findable, usable,
//! private before login, and known to the key store's registry (so that the background
//! pass never takes it for the remains of an interrupted creation).
//!
//! The module runs in child processes (one module per process); the parent damages the
//! first member's store between them through the crate's own embedded instance.

mod common;

use cks_pkcs11::config::Config;
use cks_pkcs11::hsm::embedded::{EmbeddedInstance, PinUser};
use cks_pkcs11::hsm::Instance;
use cks_pkcs11::keystore::KeyStore;
use cks_pkcs11::token::attribute::Attributes;
use cks_pkcs11::token::policy::CKA_CKS_KEY_ID;
use cryptoki::context::{CInitializeArgs, CInitializeFlags, Pkcs11};
use cryptoki::mechanism::aead::GcmParams;
use cryptoki::mechanism::Mechanism;
use cryptoki::object::{Attribute, ObjectHandle};
use cryptoki::session::{Session, UserType};
use cryptoki::types::AuthPin;
use std::path::{Path, PathBuf};
use uuid::Uuid;

const CHILD: &str = "CKS_DIVERGENCE_CHILD";
const DIR: &str = "CKS_DIVERGENCE_DIR";
const TEST: &str = "keys_missing_or_damaged_on_the_first_member_still_show";
/// Labels of the keys: intact everywhere; missing on the first member; key record
/// damaged there; stored attributes damaged there.
const LABELS: [&str; 4] = ["intact", "only-on-b", "bad-record", "bad-attrs"];

fn config(dir: &Path) -> PathBuf {
    let text = format!(
        "[keystore]\nlabel = \"d\"\ndata_dir = \"{}\"\n[kdf]\nmemory_kib = 64\niterations = 1\n\
         [[hsm]]\nid = \"a\"\nkind = \"embedded\"\n[[hsm]]\nid = \"b\"\nkind = \"embedded\"\n",
        dir.join("data").display()
    );
    let path = dir.join("cks.toml");
    std::fs::write(&path, text).unwrap();
    path
}

fn open(dir: &Path) -> (Pkcs11, cryptoki::slot::Slot) {
    std::env::set_var("CKS_CONFIG", config(dir));
    let p = Pkcs11::new(common::module_path()).unwrap();
    p.initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK))
        .unwrap();
    let slot = p.get_all_slots().unwrap()[0];
    (p, slot)
}

fn find(s: &Session, label: &str) -> Vec<ObjectHandle> {
    s.find_objects(&[Attribute::Label(label.as_bytes().to_vec())])
        .unwrap()
}

fn encrypts(s: &Session, key: ObjectHandle) -> bool {
    let mut iv = [7u8; 12];
    let mech = Mechanism::AesGcm(GcmParams::new(&mut iv, b"aad", 128.into()).unwrap());
    s.encrypt(&mech, key, b"hello").is_ok()
}

/// The first member, opened directly (no module in this process).
fn member_a(dir: &Path) -> EmbeddedInstance {
    let cfg = Config::from_file(&dir.join("cks.toml")).unwrap();
    let h = cfg.hsms.iter().find(|h| h.id == "a").unwrap();
    EmbeddedInstance::open("a", &cfg.hsm_dir(h), None).unwrap()
}

/// (object uid, CMK id) of the key labelled `label`, from member `b`'s point of view
/// (every key is intact there).
fn key_of(dir: &Path, label: &str) -> (Uuid, Uuid) {
    let cfg = Config::from_file(&dir.join("cks.toml")).unwrap();
    let h = cfg.hsms.iter().find(|h| h.id == "b").unwrap();
    let b = EmbeddedInstance::open("b", &cfg.hsm_dir(h), None).unwrap();
    b.load_attrs()
        .unwrap()
        .into_iter()
        .find_map(|(uid, bytes)| {
            let a = Attributes::decode(&bytes).ok()?;
            if a.get(pkcs11_sys::CKA_LABEL) != Some(label.as_bytes()) {
                return None;
            }
            let id = Uuid::parse_str(std::str::from_utf8(a.get(CKA_CKS_KEY_ID)?).ok()?).ok()?;
            Some((uid, id))
        })
        .unwrap_or_else(|| panic!("no key {label} on b"))
}

#[test]
fn keys_missing_or_damaged_on_the_first_member_still_show() {
    match std::env::var(CHILD).as_deref() {
        Err(_) => {
            let dir = common::tempdir();
            let d = dir.to_str().unwrap();
            let (ok, out) = common::run_child(TEST, &[(CHILD, "make"), (DIR, d)]);
            assert!(ok, "make: {out}");

            let a = member_a(&dir);
            let (only_on_b, _) = key_of(&dir, "only-on-b");
            a.destroy(only_on_b, true).unwrap();
            assert!(!a.has_object(only_on_b).unwrap());
            let (_, bad_record) = key_of(&dir, "bad-record");
            let g = a
                .cmk_generations()
                .unwrap()
                .into_iter()
                .find(|(id, _)| *id == bad_record)
                .map(|(_, g)| g)
                .unwrap();
            assert!(a.put_cmk(bad_record, g + 5, b"{\"not\": a record").unwrap());
            let (bad_attrs, _) = key_of(&dir, "bad-attrs");
            a.update_attrs(bad_attrs, &[0xff, 0xff, 0xff, 0xff, 0xff, 0x0f])
                .unwrap();
            drop(a);

            let (ok, out) = common::run_child(TEST, &[(CHILD, "check"), (DIR, d)]);
            assert!(ok, "check: {out}");

            // The key store's registry (what the background pass of every process
            // consults before removing a key) still names every key's object.
            let cfg = Config::from_file(&dir.join("cks.toml")).unwrap();
            let ks = KeyStore::open(&cfg).unwrap();
            ks.login(PinUser::User, common::USER_PIN.as_bytes())
                .unwrap();
            for label in LABELS {
                let (uid, id) = key_of(&dir, label);
                let named = ks
                    .with_cmks(|r| r.for_object(uid).map(|(c, _)| c.id))
                    .unwrap();
                assert_eq!(named, Some(id), "{label}");
            }
            let _ = std::fs::remove_dir_all(&dir);
        }
        Ok("make") => {
            let dir = PathBuf::from(std::env::var(DIR).unwrap());
            let (p, slot) = open(&dir);
            common::init_token(&p, slot);
            let s = p.open_rw_session(slot).unwrap();
            s.login(UserType::User, Some(&AuthPin::new(common::USER_PIN.into())))
                .unwrap();
            for label in LABELS {
                s.generate_key(
                    &Mechanism::AesKeyGen,
                    &[
                        Attribute::Token(true),
                        Attribute::Private(true),
                        Attribute::ValueLen(32.into()),
                        Attribute::Encrypt(true),
                        Attribute::Decrypt(true),
                        Attribute::Label(label.as_bytes().to_vec()),
                    ],
                )
                .unwrap();
            }
        }
        Ok("check") => {
            let dir = PathBuf::from(std::env::var(DIR).unwrap());
            let (p, slot) = open(&dir);
            let s = p.open_rw_session(slot).unwrap();
            for label in LABELS {
                assert!(find(&s, label).is_empty(), "{label} shows before login");
            }
            s.login(UserType::User, Some(&AuthPin::new(common::USER_PIN.into())))
                .unwrap();
            for label in LABELS {
                let found = find(&s, label);
                assert_eq!(found.len(), 1, "{label}");
                assert!(encrypts(&s, found[0]), "{label} does not encrypt");
            }
            s.logout().unwrap();
            for label in LABELS {
                assert!(find(&s, label).is_empty(), "{label} shows after logout");
            }
        }
        Ok(other) => panic!("unknown step {other}"),
    }
}

/// A process's key records follow what other processes change (state, new keys, purged
/// keys) while it re-reads only the records whose generation changed; a damaged newer
/// copy on one member leaves the key as the other members hold it.
#[test]
fn key_records_follow_changes_made_elsewhere() {
    let dir = common::tempdir();
    let cfg = Config::from_file(&config(&dir)).unwrap();
    let writer = KeyStore::open(&cfg).unwrap();
    writer.init_token(common::SO_PIN.as_bytes(), "d").unwrap();
    let reader = KeyStore::open(&cfg).unwrap();
    let register = |n: usize| {
        let id = Uuid::new_v4();
        writer
            .register_cmk(
                id,
                id,
                None,
                "AES_256".into(),
                "ENCRYPT_DECRYPT".into(),
                Some(format!("alias/k{n}")),
                String::new(),
            )
            .unwrap()
            .id
    };
    let ids: Vec<Uuid> = (0..20).map(register).collect();
    let count = |ks: &KeyStore| {
        ks.refresh_cmks_if_changed().unwrap();
        ks.with_cmks(|r| r.len()).unwrap()
    };
    assert_eq!(count(&reader), 20);

    writer.disable(&ids[3].to_string()).unwrap();
    let added = register(20);
    writer.purge(&ids[5].to_string()).unwrap();
    writer
        .set_alias(&ids[7].to_string(), "alias/moved")
        .unwrap();
    assert_eq!(count(&reader), 20);
    let state = |id: Uuid| reader.resolve(&id.to_string()).map(|c| c.state);
    assert_eq!(state(ids[3]).unwrap(), cks_pkcs11::kms::KeyState::Disabled);
    assert_eq!(state(ids[4]).unwrap(), cks_pkcs11::kms::KeyState::Enabled);
    assert!(state(added).is_ok());
    assert!(state(ids[5]).is_err(), "a purged key is still known");
    assert_eq!(reader.resolve("alias/moved").unwrap().id, ids[7]);
    assert_eq!(reader.resolve("alias/k7").unwrap().id, ids[7]);

    // A damaged record of a higher generation on the first member.
    let a = member_a(&dir);
    assert!(a.put_cmk(ids[8], 99, b"garbage").unwrap());
    drop(a);
    writer.disable(&ids[9].to_string()).unwrap();
    assert_eq!(count(&reader), 20);
    assert_eq!(state(ids[8]).unwrap(), cks_pkcs11::kms::KeyState::Enabled);
    assert_eq!(state(ids[9]).unwrap(), cks_pkcs11::kms::KeyState::Disabled);
    // A process that starts now reads every record and comes to the same view.
    let fresh = KeyStore::open(&cfg).unwrap();
    assert_eq!(count(&fresh), 20);
    assert_eq!(
        fresh.resolve(&ids[8].to_string()).unwrap().state,
        cks_pkcs11::kms::KeyState::Enabled
    );
    let _ = std::fs::remove_dir_all(&dir);
}
