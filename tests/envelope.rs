//! `CKM_CKS_ENVELOPE`: ciphertexts name their key version, so data encrypted before a
//! rotation decrypts through the same handle afterwards; tampering and the wrong key or
//! AAD are refused.

mod common;

use cryptoki::error::{Error as P11Error, RvError};
use cryptoki::mechanism::vendor_defined::VendorDefinedMechanism;
use cryptoki::mechanism::{Mechanism, MechanismType};
use cryptoki::object::{Attribute, AttributeType, KeyType, ObjectClass, ObjectHandle};
use cryptoki::session::Session;
use std::process::Command;

const CKM_CKS_ENVELOPE: u64 = 0xC34B_0001;
const CKA_CKS_KEY_ID: u64 = 0xC34B_0001;

fn envelope(aad: &[u8; 3]) -> Mechanism<'_> {
    let t = MechanismType::new_vendor_defined(CKM_CKS_ENVELOPE).unwrap();
    Mechanism::VendorDefined(VendorDefinedMechanism::new(t, Some(aad)))
}

fn aes_key(s: &Session, token: bool, label: &str) -> ObjectHandle {
    s.generate_key(
        &Mechanism::AesKeyGen,
        &[
            Attribute::Token(token),
            Attribute::Sensitive(true),
            Attribute::ValueLen(32.into()),
            Attribute::Label(label.as_bytes().to_vec()),
            Attribute::Encrypt(true),
            Attribute::Decrypt(true),
        ],
    )
    .unwrap()
}

fn rv(e: P11Error) -> RvError {
    match e {
        P11Error::Pkcs11(rv, _) => rv,
        other => panic!("unexpected error {other}"),
    }
}

#[test]
fn envelope_survives_rotation_and_refuses_tampering() {
    let c = common::ctx();
    let s = c.session();
    let key = aes_key(&s, true, "env-key");
    let id = match &s
        .get_attributes(key, &[AttributeType::VendorDefined(CKA_CKS_KEY_ID)])
        .unwrap()[0]
    {
        Attribute::VendorDefined((_, v)) => String::from_utf8(v.clone()).unwrap(),
        other => panic!("{other:?}"),
    };
    let aad = *b"ctx";
    let c1 = s.encrypt(&envelope(&aad), key, b"first secret").unwrap();
    assert_eq!(&c1[..4], b"CKS1");
    assert_eq!(u32::from_be_bytes(c1[4..8].try_into().unwrap()), 1);
    assert_eq!(c1.len(), 4 + 4 + 16 + 12 + 12 + 16);

    // Rotate from outside, as an operator would.
    let out = Command::new(env!("CARGO_BIN_EXE_cks"))
        .args(["key", "rotate", &id, "--pin", common::USER_PIN])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    std::thread::sleep(std::time::Duration::from_millis(800));

    let c2 = s.encrypt(&envelope(&aad), key, b"second secret").unwrap();
    assert_eq!(
        u32::from_be_bytes(c2[4..8].try_into().unwrap()),
        2,
        "encrypts under the new version"
    );
    // The same handle decrypts both, whatever version made them.
    assert_eq!(
        s.decrypt(&envelope(&aad), key, &c1).unwrap(),
        b"first secret"
    );
    assert_eq!(
        s.decrypt(&envelope(&aad), key, &c2).unwrap(),
        b"second secret"
    );

    let mut bad = c1.clone();
    bad[40] ^= 1;
    assert_eq!(
        rv(s.decrypt(&envelope(&aad), key, &bad).unwrap_err()),
        RvError::EncryptedDataInvalid
    );
    let mut other_version = c1.clone();
    other_version[7] = 2; // the header is authenticated
    assert_eq!(
        rv(s.decrypt(&envelope(&aad), key, &other_version).unwrap_err()),
        RvError::EncryptedDataInvalid
    );
    assert_eq!(
        rv(s.decrypt(&envelope(b"CTX"), key, &c1).unwrap_err()),
        RvError::EncryptedDataInvalid
    );
    let other = aes_key(&s, true, "env-other");
    assert_eq!(
        rv(s.decrypt(&envelope(&aad), other, &c1).unwrap_err()),
        RvError::EncryptedDataInvalid
    );
    assert_eq!(
        rv(s.decrypt(&envelope(&aad), key, &c1[..20]).unwrap_err()),
        RvError::EncryptedDataLenRange
    );
    // Only customer master keys carry versions.
    let session_key = aes_key(&s, false, "env-session");
    assert_eq!(
        rv(s.encrypt(&envelope(&aad), session_key, b"x").unwrap_err()),
        RvError::KeyTypeInconsistent
    );
    let _ = (ObjectClass::SECRET_KEY, KeyType::AES);
}
