//! An operation begun on a pkcs11 member whose backend fails part-way is finished on
//! another member without the caller seeing an error: multi-part AES-CBC-PAD encryption
//! (output already delivered is not repeated) and a multi-part ECDSA signature.
//!
//! Two members: an embedded instance and a SoftHSM2 token, each with a fault file. The
//! embedded one is failed while the operation starts (so the token serves it), then
//! restored and the token failed before the operation ends.

mod common;

use common::softhsm::{tools_present, MixedStore, SoftHsm};
use cryptoki::context::{CInitializeArgs, CInitializeFlags, Pkcs11};
use cryptoki::mechanism::Mechanism;
use cryptoki::object::Attribute;
use cryptoki::session::UserType;
use cryptoki::types::AuthPin;
use std::path::{Path, PathBuf};
use std::time::Duration;

const TEST: &str = "operation_moves_to_another_member_when_its_backend_fails";
const PIN: &str = "replay-user-1234";

fn fault(dir: &Path, id: &str) -> PathBuf {
    dir.join(format!("fault-{id}"))
}

/// The child: runs the operations against the key store of `CKS_CONFIG`.
fn child() {
    let dir = PathBuf::from(std::env::var("REPLAY_DIR").expect("REPLAY_DIR"));
    let p = Pkcs11::new(common::module_path()).expect("load module");
    p.initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK))
        .expect("C_Initialize");
    let slot = p.get_slots_with_token().expect("slots")[0];
    let s = p.open_rw_session(slot).expect("session");
    s.login(UserType::User, Some(&AuthPin::new(PIN.into())))
        .expect("login");
    let aes = s
        .generate_key(
            &Mechanism::AesKeyGen,
            &[
                Attribute::Token(true),
                Attribute::ValueLen(32.into()),
                Attribute::Encrypt(true),
                Attribute::Decrypt(true),
                Attribute::Label(b"replay-aes".to_vec()),
            ],
        )
        .expect("AES key");
    let (ec_pub, ec_priv) = s
        .generate_key_pair(
            &Mechanism::EccKeyPairGen,
            &[
                Attribute::Token(true),
                Attribute::EcParams(vec![
                    0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07,
                ]),
            ],
            &[Attribute::Token(true), Attribute::Sign(true)],
        )
        .expect("EC pair");

    let plain: Vec<u8> = (0..3000u32).map(|i| (i * 7 % 251) as u8).collect();
    let iv = [7u8; 16];
    let expected = s
        .encrypt(&Mechanism::AesCbcPad(iv), aes, &plain)
        .expect("one-shot encryption");

    // The embedded member fails: the operations start on the token.
    std::fs::write(fault(&dir, "emb"), b"").unwrap();
    std::thread::sleep(Duration::from_millis(1500));
    s.encrypt_init(&Mechanism::AesCbcPad(iv), aes)
        .expect("C_EncryptInit");
    let mut got = s.encrypt_update(&plain[..1000]).expect("first part");
    assert_eq!(got.len(), 992, "whole blocks stream out");
    let sign = p.open_rw_session(slot).expect("second session");
    sign.sign_init(&Mechanism::EcdsaSha256, ec_priv)
        .expect("C_SignInit");
    sign.sign_update(&plain[..1500]).expect("C_SignUpdate");

    // The embedded member returns (the health thread repairs it); the token fails.
    std::fs::remove_file(fault(&dir, "emb")).unwrap();
    std::thread::sleep(Duration::from_millis(2500));
    std::fs::write(fault(&dir, "soft1"), b"").unwrap();

    got.extend(
        s.encrypt_update(&plain[1000..])
            .expect("second part, moved"),
    );
    got.extend(s.encrypt_final().expect("C_EncryptFinal"));
    assert_eq!(got, expected, "the moved operation's output is the same");

    sign.sign_update(&plain[1500..]).expect("C_SignUpdate");
    let sig = sign.sign_final().expect("C_SignFinal, moved");
    s.verify(&Mechanism::EcdsaSha256, ec_pub, &plain, &sig)
        .expect("the signature verifies");

    let back = s
        .decrypt(&Mechanism::AesCbcPad(iv), aes, &got)
        .expect("decryption");
    assert_eq!(back, plain);
    drop(sign);
    drop(s);
    let _ = p.finalize();
    println!("CHILD-OK");
}

#[test]
fn operation_moves_to_another_member_when_its_backend_fails() {
    if std::env::var("REPLAY_CHILD").is_ok() {
        child();
        return;
    }
    if !tools_present(TEST, false) {
        return;
    }
    let dir = common::tempdir();
    let soft = SoftHsm::new(&dir.join("softhsm"));
    soft.init_token("soft1");
    let store = MixedStore::new(
        &dir,
        &soft,
        &format!("fault_file = \"{}\"", fault(&dir, "emb").display()),
        &format!("fault_file = \"{}\"", fault(&dir, "soft1").display()),
    );
    store.cks(&["init", "--so-pin", "replay-so-1234", "--pin", PIN]);
    let dir_s = dir.display().to_string();
    let mut child_env = store.env_refs();
    child_env.push(("REPLAY_DIR", dir_s.as_str()));
    child_env.push(("REPLAY_CHILD", "1"));
    child_env.push(("CKS_LOG", "info"));
    let (ok, out) = common::run_child(TEST, &child_env);
    assert!(ok && out.contains("CHILD-OK"), "child failed:\n{out}");
    assert!(
        out.contains("operation moved to another instance"),
        "no operation moved:\n{out}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}
