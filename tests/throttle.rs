//! `max_in_flight`: an instance at its concurrency limit is not given more calls; a
//! caller waits (with backoff) until a call on it finishes.

mod common;

use cryptoki::context::{CInitializeArgs, CInitializeFlags, Pkcs11};
use cryptoki::mechanism::Mechanism;
use cryptoki::object::Attribute;
use cryptoki::session::UserType;
use cryptoki::types::AuthPin;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

#[test]
fn a_busy_instance_makes_callers_wait_not_fail() {
    if std::env::var("CKS_THROTTLE_CHILD").is_err() {
        let (ok, out) = common::run_child(
            "a_busy_instance_makes_callers_wait_not_fail",
            &[("CKS_THROTTLE_CHILD", "1")],
        );
        assert!(ok, "{out}");
        return;
    }
    let dir = common::tempdir();
    let cfg = dir.join("cks.toml");
    std::fs::write(
        &cfg,
        format!(
            "[keystore]\nlabel = \"t\"\ndata_dir = \"{}\"\n[kdf]\nmemory_kib = 64\niterations = 1\n[[hsm]]\nid = \"only\"\nkind = \"embedded\"\nmax_in_flight = 1\n",
            dir.join("data").display()
        ),
    )
    .unwrap();
    std::env::set_var("CKS_CONFIG", &cfg);
    let p = Pkcs11::new(common::module_path()).unwrap();
    p.initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK))
        .unwrap();
    let slot = p.get_all_slots().unwrap()[0];
    common::init_token(&p, slot);
    let s = p.open_rw_session(slot).unwrap();
    s.login(UserType::User, Some(&AuthPin::new(common::USER_PIN.into())))
        .unwrap();
    let key = s
        .generate_key(
            &Mechanism::GenericSecretKeyGen,
            &[
                Attribute::Token(true),
                Attribute::Sensitive(true),
                Attribute::ValueLen(32.into()),
                Attribute::Sign(true),
            ],
        )
        .unwrap();
    // Session A holds the instance's one slot with a multi-part MAC in progress.
    let a = p.open_rw_session(slot).unwrap();
    a.sign_init(&Mechanism::Sha256Hmac, key).unwrap();
    a.sign_update(b"part one").unwrap();
    let released = Arc::new(Mutex::new(None::<Instant>));
    let r = released.clone();
    let finisher = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(300));
        let mac = a.sign_final().unwrap();
        *r.lock().unwrap() = Some(Instant::now());
        mac
    });
    // Session B asks for the same instance: it must wait for A, then succeed.
    let b = p.open_rw_session(slot).unwrap();
    let mac = b.sign(&Mechanism::Sha256Hmac, key, b"other").unwrap();
    let served = Instant::now();
    assert_eq!(mac.len(), 32);
    finisher.join().unwrap();
    let released = released.lock().unwrap().expect("A finished");
    assert!(
        served
            >= released
                .checked_sub(Duration::from_millis(5))
                .unwrap_or(released),
        "B was served while A still held the instance's only slot"
    );
}
