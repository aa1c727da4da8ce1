//! Every kind of key use leaves an audit record naming the instance that served it.

mod common;

use cryptoki::mechanism::elliptic_curve::{EcKdf, Ecdh1DeriveParams};
use cryptoki::mechanism::Mechanism;
use cryptoki::object::{Attribute, KeyType, ObjectClass};

const P256: [u8; 10] = [0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07];

#[test]
fn each_kind_of_key_use_is_recorded_with_its_instance() {
    let c = common::ctx();
    let s = c.session();
    let aes = s
        .generate_key(
            &Mechanism::AesKeyGen,
            &[
                Attribute::Token(true),
                Attribute::Sensitive(true),
                Attribute::ValueLen(32.into()),
                Attribute::Label(b"audited".to_vec()),
            ],
        )
        .unwrap();
    let ct = s.encrypt(&Mechanism::AesKeyWrapPad, aes, &[0u8; 0]).err();
    let _ = ct; // encryption with a wrap mechanism is refused: still audited (init refused)
    let iv = [7u8; 16];
    let ct = s.encrypt(&Mechanism::AesCbcPad(iv), aes, b"data").unwrap();
    s.decrypt(&Mechanism::AesCbcPad(iv), aes, &ct).unwrap();
    let (public, private) = s
        .generate_key_pair(
            &Mechanism::EccKeyPairGen,
            &[Attribute::Token(true), Attribute::EcParams(P256.to_vec())],
            &[
                Attribute::Token(true),
                Attribute::Sensitive(true),
                Attribute::Derive(true),
            ],
        )
        .unwrap();
    let sig = s.sign(&Mechanism::EcdsaSha256, private, b"m").unwrap();
    s.verify(&Mechanism::EcdsaSha256, public, b"m", &sig)
        .unwrap();
    let session_key = s
        .generate_key(
            &Mechanism::AesKeyGen,
            &[
                Attribute::Token(false),
                Attribute::Extractable(true),
                Attribute::ValueLen(16.into()),
            ],
        )
        .unwrap();
    let wrapped = s
        .wrap_key(&Mechanism::AesKeyWrapPad, aes, session_key)
        .unwrap();
    s.unwrap_key(
        &Mechanism::AesKeyWrapPad,
        aes,
        &wrapped,
        &[
            Attribute::Token(false),
            Attribute::Class(ObjectClass::SECRET_KEY),
            Attribute::KeyType(KeyType::AES),
        ],
    )
    .unwrap();
    let point = match &s
        .get_attributes(public, &[cryptoki::object::AttributeType::EcPoint])
        .unwrap()[0]
    {
        Attribute::EcPoint(p) => p.clone(),
        other => panic!("{other:?}"),
    };
    let params = Ecdh1DeriveParams::new(EcKdf::null(), &point);
    s.derive_key(
        &Mechanism::Ecdh1Derive(params),
        private,
        &[
            Attribute::Token(false),
            Attribute::Class(ObjectClass::SECRET_KEY),
            Attribute::KeyType(KeyType::GENERIC_SECRET),
            Attribute::ValueLen(32.into()),
        ],
    )
    .unwrap();

    // Batch durability: on disk within 100 ms.
    std::thread::sleep(std::time::Duration::from_millis(400));
    let records = cks_pkcs11::audit::read_records(&c.dir.join("data").join("audit")).unwrap();
    for op in [
        "encrypt", "decrypt", "sign", "verify", "wrap", "unwrap", "derive",
    ] {
        let served: Vec<_> = records
            .iter()
            .filter(|r| r["op"] == op && r["result"] == "CKR_OK")
            .collect();
        assert!(!served.is_empty(), "no successful {op} record");
        for r in served {
            assert_eq!(
                r["instance"], "hsm1",
                "{op} record without its instance: {r}"
            );
            assert!(
                r["mechanism"]
                    .as_str()
                    .is_some_and(|m| m.starts_with("CKM_")),
                "{r}"
            );
        }
    }
    assert!(
        records
            .iter()
            .any(|r| r["op"] == "encrypt" && r["result"] == "CKR_MECHANISM_INVALID"),
        "a refused key use is recorded too"
    );
    assert!(
        records.iter().any(|r| r["op"] == "key_create"),
        "key creation is recorded"
    );
}
