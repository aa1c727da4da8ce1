//! The first thing an application does: load, initialise, generate and use a key.

mod common;

use cryptoki::mechanism::Mechanism;
use cryptoki::object::{Attribute, ObjectClass};

#[test]
fn generate_sign_verify_through_the_c_abi() {
    let c = common::ctx();
    let s = c.session();
    let (public, private) = s
        .generate_key_pair(
            &Mechanism::EccKeyPairGen,
            &[
                Attribute::Token(true),
                Attribute::EcParams(vec![
                    0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07,
                ]),
            ],
            &[
                Attribute::Token(true),
                Attribute::Label(b"smoke-ec".to_vec()),
            ],
        )
        .unwrap();
    let sig = s.sign(&Mechanism::EcdsaSha256, private, b"hello").unwrap();
    assert_eq!(sig.len(), 64);
    s.verify(&Mechanism::EcdsaSha256, public, b"hello", &sig)
        .unwrap();
    assert!(s
        .verify(&Mechanism::EcdsaSha256, public, b"hellO", &sig)
        .is_err());
    let found = s
        .find_objects(&[
            Attribute::Class(ObjectClass::PRIVATE_KEY),
            Attribute::Label(b"smoke-ec".to_vec()),
        ])
        .unwrap();
    assert_eq!(found, vec![private]);
}
