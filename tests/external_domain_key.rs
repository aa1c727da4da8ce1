//! The domain key inside a pkcs11 member cannot be used to take a key out: whoever holds
//! the backend token's user PIN may wrap a cks key under the (trusted) domain key, but
//! unwrapping the result as anything but a sensitive, trusted-wrap-only key is refused
//! (the domain key's CKA_UNWRAP_TEMPLATE). Copies as cks makes them still work.
//!
//! This test process loads SoftHSM2 directly (never the cks module), after `cks init`
//! and `cks key create` ran as subprocesses.

mod common;

use common::softhsm::{tools_present, MixedStore, SoftHsm, SOFT_PIN};
use cryptoki::context::{CInitializeArgs, CInitializeFlags, Pkcs11};
use cryptoki::error::{Error, RvError};
use cryptoki::mechanism::Mechanism;
use cryptoki::object::{Attribute, AttributeType, KeyType, ObjectClass};
use cryptoki::session::UserType;
use cryptoki::types::AuthPin;

const TEST: &str = "domain_key_unwraps_only_into_protected_keys";

#[test]
fn domain_key_unwraps_only_into_protected_keys() {
    if !tools_present(TEST, false) {
        return;
    }
    let dir = common::tempdir();
    let soft = SoftHsm::new(&dir.join("softhsm"));
    soft.init_token("soft1");
    let store = MixedStore::new(&dir, &soft, "", "");
    store.cks(&["init", "--so-pin", "dk-so-1234", "--pin", "dk-user-1234"]);
    store.cks(&[
        "key",
        "create",
        "--spec",
        "AES_256",
        "--alias",
        "alias/dk-test",
        "--pin",
        "dk-user-1234",
    ]);

    // Now as someone holding the backend token's user PIN.
    let (conf_var, conf) = soft.env();
    std::env::set_var(conf_var, &conf);
    let p = Pkcs11::new(&soft.module).expect("load SoftHSM2");
    p.initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK))
        .expect("C_Initialize");
    let slot = p
        .get_slots_with_token()
        .unwrap()
        .into_iter()
        .find(|s| p.get_token_info(*s).unwrap().label().trim_end() == "soft1")
        .expect("token soft1");
    let s = p.open_rw_session(slot).unwrap();
    s.login(UserType::User, Some(&AuthPin::new(SOFT_PIN.into())))
        .unwrap();
    let domain = s
        .find_objects(&[Attribute::Label(b"cks-domain-key".to_vec())])
        .unwrap()[0];
    let cmk = s
        .find_objects(&[Attribute::Class(ObjectClass::SECRET_KEY)])
        .unwrap()
        .into_iter()
        .find(|h| {
            matches!(
                s.get_attributes(*h, &[AttributeType::Label]).unwrap().first(),
                Some(Attribute::Label(l)) if l.starts_with(b"cks:")
            )
        })
        .expect("a cks key on the token");
    let wrapped = s
        .wrap_key(&Mechanism::AesKeyWrapPad, domain, cmk)
        .expect("the trusted domain key wraps a cks key");

    let base = [
        Attribute::Class(ObjectClass::SECRET_KEY),
        Attribute::KeyType(KeyType::AES),
        Attribute::Token(false),
    ];
    for (what, extra) in [
        (
            "non-sensitive, extractable",
            vec![Attribute::Sensitive(false), Attribute::Extractable(true)],
        ),
        ("without the flags", vec![]),
        (
            "sensitive but freely wrappable",
            vec![
                Attribute::Sensitive(true),
                Attribute::WrapWithTrusted(false),
            ],
        ),
    ] {
        let mut t = base.to_vec();
        t.extend(extra);
        let r = s.unwrap_key(&Mechanism::AesKeyWrapPad, domain, &wrapped, &t);
        assert!(
            matches!(r, Err(Error::Pkcs11(RvError::TemplateInconsistent, _))),
            "unwrap {what} under the domain key: {r:?}"
        );
    }
    // As cks copies keys: allowed, and the copy stays protected.
    let mut t = base.to_vec();
    t.extend([
        Attribute::Sensitive(true),
        Attribute::Extractable(true),
        Attribute::WrapWithTrusted(true),
    ]);
    let copy = s
        .unwrap_key(&Mechanism::AesKeyWrapPad, domain, &wrapped, &t)
        .expect("unwrap as cks does");
    let value = s.get_attributes(copy, &[AttributeType::Value]);
    assert!(
        !matches!(value.as_deref(), Ok([Attribute::Value(_)])),
        "the copy's value is readable: {value:?}"
    );
    drop(s);
    let _ = p.finalize();
    let _ = std::fs::remove_dir_all(&dir);
}
