//! An attribute change made while a member was down reaches that member when it is
//! repaired: afterwards it alone shows the new value.

mod common;

use cryptoki::context::{CInitializeArgs, CInitializeFlags, Pkcs11};
use cryptoki::object::{Attribute, AttributeType, ObjectClass};
use cryptoki::session::UserType;
use cryptoki::types::AuthPin;
use std::path::Path;
use std::time::Duration;

fn config(dir: &Path, members: &[&str]) -> std::path::PathBuf {
    let mut text = format!(
        "[keystore]\nlabel = \"r\"\ndata_dir = \"{}\"\n[kdf]\nmemory_kib = 64\niterations = 1\n",
        dir.join("data").display()
    );
    for m in members {
        text.push_str(&format!(
            "[[hsm]]\nid = \"{m}\"\nkind = \"embedded\"\nfault_file = \"{}\"\n",
            dir.join(format!("{m}.fail")).display()
        ));
    }
    let path = dir.join(format!("cks-{}.toml", members.join("-")));
    std::fs::write(&path, text).unwrap();
    path
}

fn open(cfg: &Path) -> (Pkcs11, cryptoki::slot::Slot) {
    std::env::set_var("CKS_CONFIG", cfg);
    let p = Pkcs11::new(common::module_path()).unwrap();
    p.initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK))
        .unwrap();
    let slot = p.get_all_slots().unwrap()[0];
    (p, slot)
}

fn label_of(s: &cryptoki::session::Session) -> Option<String> {
    let found = s
        .find_objects(&[Attribute::Class(ObjectClass::DATA)])
        .unwrap();
    let h = *found.first()?;
    match &s.get_attributes(h, &[AttributeType::Label]).unwrap()[0] {
        Attribute::Label(l) => Some(String::from_utf8_lossy(l).to_string()),
        _ => None,
    }
}

#[test]
fn attribute_change_missed_by_a_member_is_repaired() {
    match std::env::var("CKS_REPAIR_CHILD").as_deref() {
        Err(_) => {
            let dir = common::tempdir();
            let d = dir.to_str().unwrap();
            for step in ["change", "check"] {
                let (ok, out) = common::run_child(
                    "attribute_change_missed_by_a_member_is_repaired",
                    &[("CKS_REPAIR_CHILD", step), ("CKS_REPAIR_DIR", d)],
                );
                assert!(ok, "{step}: {out}");
            }
        }
        Ok("change") => {
            let dir = std::path::PathBuf::from(std::env::var("CKS_REPAIR_DIR").unwrap());
            let (p, slot) = open(&config(&dir, &["h1", "h2", "h3"]));
            common::init_token(&p, slot);
            let s = p.open_rw_session(slot).unwrap();
            s.login(UserType::User, Some(&AuthPin::new(common::USER_PIN.into())))
                .unwrap();
            let obj = s
                .create_object(&[
                    Attribute::Class(ObjectClass::DATA),
                    Attribute::Token(true),
                    Attribute::Label(b"before".to_vec()),
                    Attribute::Value(b"v".to_vec()),
                ])
                .unwrap();
            // h3 fails; the change reaches h1 and h2 (a majority).
            std::fs::write(dir.join("h3.fail"), b"").unwrap();
            s.update_attributes(obj, &[Attribute::Label(b"after".to_vec())])
                .unwrap();
            // h3 returns; this logged-in process repairs it in the background.
            std::fs::remove_file(dir.join("h3.fail")).unwrap();
            std::thread::sleep(Duration::from_millis(2500));
        }
        Ok("check") => {
            // Only h3 is configured: what it holds is what it was repaired to.
            let dir = std::path::PathBuf::from(std::env::var("CKS_REPAIR_DIR").unwrap());
            let (p, slot) = open(&config(&dir, &["h3"]));
            let s = p.open_rw_session(slot).unwrap();
            s.login(UserType::User, Some(&AuthPin::new(common::USER_PIN.into())))
                .unwrap();
            assert_eq!(
                label_of(&s).as_deref(),
                Some("after"),
                "h3 kept the label it had before the change"
            );
        }
        Ok(other) => panic!("unknown step {other}"),
    }
}
