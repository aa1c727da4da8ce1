//! Attribute-array values (`CKA_UNWRAP_TEMPLATE`, `CKA_WRAP_TEMPLATE`) for calls cks
//! makes to other modules: the value is an array of `CK_ATTRIBUTE`, each pointing at
//! its own value, so building one means writing pointers. That stays here, in the C ABI
//! layer.

use pkcs11_sys::{CK_ATTRIBUTE_TYPE, CK_ULONG};

/// An array of `CK_ATTRIBUTE` as bytes, with the values it points at. The bytes are
/// valid only while this lives.
pub struct AttributeArray {
    bytes: Vec<u8>,
    _values: Vec<Box<[u8]>>,
}

impl AttributeArray {
    pub fn new(attrs: &[(CK_ATTRIBUTE_TYPE, &[u8])]) -> AttributeArray {
        let values: Vec<Box<[u8]>> = attrs.iter().map(|(_, v)| Box::from(*v)).collect();
        let mut bytes =
            Vec::with_capacity(attrs.len() * std::mem::size_of::<pkcs11_sys::CK_ATTRIBUTE>());
        for ((t, _), v) in attrs.iter().zip(&values) {
            // CK_ATTRIBUTE { type, pValue, ulValueLen }, native layout.
            bytes.extend_from_slice(&t.to_ne_bytes());
            bytes.extend_from_slice(&(v.as_ptr() as usize).to_ne_bytes());
            bytes.extend_from_slice(&(v.len() as CK_ULONG).to_ne_bytes());
        }
        debug_assert_eq!(
            bytes.len(),
            attrs.len() * std::mem::size_of::<pkcs11_sys::CK_ATTRIBUTE>()
        );
        AttributeArray {
            bytes,
            _values: values,
        }
    }

    pub fn bytes(&self) -> &[u8] {
        &self.bytes
    }
}
