//! THE attribute policy: the one place that decides what a template may say when an
//! object is made, copied or changed, and what a caller may read.
//!
//! Token keys (secret and private keys with `CKA_TOKEN=TRUE`) are customer master keys:
//! generated inside the HSM, always `CKA_SENSITIVE`, never `CKA_EXTRACTABLE`, with
//! `CKA_ALWAYS_SENSITIVE` and `CKA_NEVER_EXTRACTABLE` true, never copyable. Session
//! keys are the application's own and follow their template like any HSM's.

use super::attribute::{
    parse_bool, parse_ulong, AttrType, Attributes, AttributesBuilder, Template,
};
use crate::error::{Error, Result};
use pkcs11_sys::*;

/// Vendor-defined attributes (see include/cks_pkcs11.h).
pub const CKA_CKS_KEY_ID: AttrType = 0xC34B_0001;
pub const CKA_CKS_ARN: AttrType = 0xC34B_0002;
pub const CKA_CKS_KEY_STATE: AttrType = 0xC34B_0003;
pub const CKA_CKS_KEY_SPEC: AttrType = 0xC34B_0004;
pub const CKA_CKS_KEY_USAGE: AttrType = 0xC34B_0005;
pub const CKA_CKS_KEY_VERSION: AttrType = 0xC34B_0006;
pub const CKA_CKS_CREATION_DATE: AttrType = 0xC34B_0007;
pub const CKA_CKS_DELETION_DATE: AttrType = 0xC34B_0008;

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Kind {
    Bool,
    Ulong,
    Bytes,
}

/// How an attribute may change after the object exists (PKCS#11 v2.40 §4 footnotes).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Change {
    /// `C_SetAttributeValue` and `C_CopyObject` may change it.
    Free,
    /// Only `C_CopyObject` may change it (`CKA_TOKEN`, `CKA_PRIVATE`, `CKA_MODIFIABLE`).
    CopyOnly,
    /// May only go from FALSE to TRUE (`CKA_SENSITIVE`, `CKA_WRAP_WITH_TRUSTED`).
    LatchTrue,
    /// May only go from TRUE to FALSE (`CKA_EXTRACTABLE`, `CKA_COPYABLE`).
    LatchFalse,
    Never,
}

/// Who supplies the value when the object is made.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Origin {
    /// The template may give it.
    Caller,
    /// The token computes it; a template that gives it is inconsistent.
    Token,
    /// Key material: given by `C_CreateObject` only, never readable when sensitive.
    Secret,
}

struct Rule {
    t: AttrType,
    kind: Kind,
    change: Change,
    origin: Origin,
}

const fn r(t: AttrType, kind: Kind, change: Change, origin: Origin) -> Rule {
    Rule {
        t,
        kind,
        change,
        origin,
    }
}

use Change::*;
use Kind::*;
use Origin::*;

const COMMON: &[Rule] = &[
    r(CKA_CLASS, Ulong, Never, Caller),
    r(CKA_TOKEN, Bool, CopyOnly, Caller),
    r(CKA_PRIVATE, Bool, CopyOnly, Caller),
    r(CKA_MODIFIABLE, Bool, CopyOnly, Caller),
    r(CKA_COPYABLE, Bool, LatchFalse, Caller),
    r(CKA_DESTROYABLE, Bool, Free, Caller),
    r(CKA_LABEL, Bytes, Free, Caller),
];

const DATA: &[Rule] = &[
    r(CKA_APPLICATION, Bytes, Free, Caller),
    r(CKA_OBJECT_ID, Bytes, Free, Caller),
    r(CKA_VALUE, Bytes, Free, Caller),
];

const CERTIFICATE: &[Rule] = &[
    r(CKA_CERTIFICATE_TYPE, Ulong, Never, Caller),
    r(CKA_TRUSTED, Bool, Free, Caller),
    r(CKA_CERTIFICATE_CATEGORY, Ulong, Free, Caller),
    r(CKA_CHECK_VALUE, Bytes, Never, Caller),
    r(CKA_START_DATE, Bytes, Free, Caller),
    r(CKA_END_DATE, Bytes, Free, Caller),
    r(CKA_PUBLIC_KEY_INFO, Bytes, Never, Caller),
    r(CKA_SUBJECT, Bytes, Free, Caller),
    r(CKA_ID, Bytes, Free, Caller),
    r(CKA_ISSUER, Bytes, Free, Caller),
    r(CKA_SERIAL_NUMBER, Bytes, Free, Caller),
    r(CKA_VALUE, Bytes, Never, Caller),
    r(CKA_URL, Bytes, Never, Caller),
    r(CKA_HASH_OF_SUBJECT_PUBLIC_KEY, Bytes, Never, Caller),
    r(CKA_HASH_OF_ISSUER_PUBLIC_KEY, Bytes, Never, Caller),
    r(CKA_JAVA_MIDP_SECURITY_DOMAIN, Ulong, Never, Caller),
    r(CKA_NAME_HASH_ALGORITHM, Ulong, Never, Caller),
];

const KEY: &[Rule] = &[
    r(CKA_KEY_TYPE, Ulong, Never, Caller),
    r(CKA_ID, Bytes, Free, Caller),
    r(CKA_START_DATE, Bytes, Free, Caller),
    r(CKA_END_DATE, Bytes, Free, Caller),
    r(CKA_DERIVE, Bool, Free, Caller),
    r(CKA_LOCAL, Bool, Never, Token),
    r(CKA_KEY_GEN_MECHANISM, Ulong, Never, Token),
    r(CKA_ALLOWED_MECHANISMS, Bytes, Never, Caller),
    r(CKA_CKS_KEY_ID, Bytes, Never, Token),
];

const PUBLIC: &[Rule] = &[
    r(CKA_SUBJECT, Bytes, Free, Caller),
    r(CKA_ENCRYPT, Bool, Free, Caller),
    r(CKA_VERIFY, Bool, Free, Caller),
    r(CKA_VERIFY_RECOVER, Bool, Free, Caller),
    r(CKA_WRAP, Bool, Free, Caller),
    r(CKA_TRUSTED, Bool, Free, Caller),
    r(CKA_PUBLIC_KEY_INFO, Bytes, Never, Token),
    r(CKA_MODULUS, Bytes, Never, Caller),
    r(CKA_MODULUS_BITS, Ulong, Never, Caller),
    r(CKA_PUBLIC_EXPONENT, Bytes, Never, Caller),
    r(CKA_EC_PARAMS, Bytes, Never, Caller),
    r(CKA_EC_POINT, Bytes, Never, Caller),
];

const PRIVATE: &[Rule] = &[
    r(CKA_SUBJECT, Bytes, Free, Caller),
    r(CKA_SENSITIVE, Bool, LatchTrue, Caller),
    r(CKA_DECRYPT, Bool, Free, Caller),
    r(CKA_SIGN, Bool, Free, Caller),
    r(CKA_SIGN_RECOVER, Bool, Free, Caller),
    r(CKA_UNWRAP, Bool, Free, Caller),
    r(CKA_EXTRACTABLE, Bool, LatchFalse, Caller),
    r(CKA_ALWAYS_SENSITIVE, Bool, Never, Token),
    r(CKA_NEVER_EXTRACTABLE, Bool, Never, Token),
    r(CKA_WRAP_WITH_TRUSTED, Bool, LatchTrue, Caller),
    r(CKA_ALWAYS_AUTHENTICATE, Bool, Never, Caller),
    r(CKA_PUBLIC_KEY_INFO, Bytes, Never, Token),
    r(CKA_MODULUS, Bytes, Never, Caller),
    r(CKA_PUBLIC_EXPONENT, Bytes, Never, Caller),
    r(CKA_EC_PARAMS, Bytes, Never, Caller),
    r(CKA_VALUE, Bytes, Never, Secret),
    r(CKA_PRIVATE_EXPONENT, Bytes, Never, Secret),
    r(CKA_PRIME_1, Bytes, Never, Secret),
    r(CKA_PRIME_2, Bytes, Never, Secret),
    r(CKA_EXPONENT_1, Bytes, Never, Secret),
    r(CKA_EXPONENT_2, Bytes, Never, Secret),
    r(CKA_COEFFICIENT, Bytes, Never, Secret),
];

const SECRET: &[Rule] = &[
    r(CKA_SENSITIVE, Bool, LatchTrue, Caller),
    r(CKA_ENCRYPT, Bool, Free, Caller),
    r(CKA_DECRYPT, Bool, Free, Caller),
    r(CKA_SIGN, Bool, Free, Caller),
    r(CKA_VERIFY, Bool, Free, Caller),
    r(CKA_WRAP, Bool, Free, Caller),
    r(CKA_UNWRAP, Bool, Free, Caller),
    r(CKA_EXTRACTABLE, Bool, LatchFalse, Caller),
    r(CKA_ALWAYS_SENSITIVE, Bool, Never, Token),
    r(CKA_NEVER_EXTRACTABLE, Bool, Never, Token),
    r(CKA_CHECK_VALUE, Bytes, Never, Token),
    r(CKA_WRAP_WITH_TRUSTED, Bool, LatchTrue, Caller),
    r(CKA_TRUSTED, Bool, Free, Caller),
    r(CKA_VALUE, Bytes, Never, Secret),
    r(CKA_VALUE_LEN, Ulong, Never, Caller),
];

fn class_rules(class: CK_OBJECT_CLASS) -> &'static [&'static [Rule]] {
    match class {
        CKO_DATA => &[COMMON, DATA],
        CKO_CERTIFICATE => &[COMMON, CERTIFICATE],
        CKO_PUBLIC_KEY => &[COMMON, KEY, PUBLIC],
        CKO_PRIVATE_KEY => &[COMMON, KEY, PRIVATE],
        CKO_SECRET_KEY => &[COMMON, KEY, SECRET],
        _ => &[],
    }
}

fn rule(class: CK_OBJECT_CLASS, t: AttrType) -> Option<&'static Rule> {
    class_rules(class)
        .iter()
        .flat_map(|rules| rules.iter())
        .find(|r| r.t == t)
}

/// Attributes every object of a class answers for (unset ones read as empty), so tools
/// that print everything (pkcs11-tool) do not see `CKR_ATTRIBUTE_TYPE_INVALID` for
/// standard attributes.
pub fn is_known(class: CK_OBJECT_CLASS, t: AttrType) -> bool {
    rule(class, t).is_some()
        || is_cmk_vendor_attr(t)
            && matches!(class, CKO_SECRET_KEY | CKO_PRIVATE_KEY | CKO_PUBLIC_KEY)
}

fn is_cmk_vendor_attr(t: AttrType) -> bool {
    (CKA_CKS_KEY_ID..=CKA_CKS_DELETION_DATE).contains(&t)
}

/// Key material attributes: never stored among the attributes; readable only from a
/// key that is neither sensitive nor unextractable.
pub fn is_secret_component(class: CK_OBJECT_CLASS, t: AttrType) -> bool {
    rule(class, t).is_some_and(|r| r.origin == Secret)
}

pub fn is_cmk(attrs: &Attributes) -> bool {
    attrs.flag(CKA_TOKEN) && matches!(attrs.class(), CKO_SECRET_KEY | CKO_PRIVATE_KEY)
}

/// Every value in a template has the size its type demands, and no attribute appears twice.
pub fn check_template_shape(class: CK_OBJECT_CLASS, template: &Template) -> Result<()> {
    for (i, (t, v)) in template.iter().enumerate() {
        if template[..i].iter().any(|(u, _)| u == t) {
            return Err(Error::template_inconsistent(format!(
                "attribute 0x{t:x} appears twice in the template"
            )));
        }
        let Some(rule) = rule(class, *t) else {
            return Err(Error::new(
                CKR_ATTRIBUTE_TYPE_INVALID,
                format!("attribute 0x{t:x} is not valid for object class 0x{class:x}"),
            ));
        };
        match rule.kind {
            Bool => {
                parse_bool(*t, v)?;
            }
            Ulong => {
                parse_ulong(*t, v)?;
            }
            Bytes => {}
        }
    }
    Ok(())
}

/// How a new object comes to be; decides what the template may supply.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Creation {
    /// `C_CreateObject`: the template carries the values, key material included.
    Create,
    /// `C_GenerateKey`/`C_GenerateKeyPair`: material made inside the HSM.
    Generate,
    /// `C_UnwrapKey`/`C_DeriveKey`: material that came from outside.
    Import,
}

/// Apply a template for a new object onto `defaults`, enforcing the policy.
/// `logged_in_so` decides who may set `CKA_TRUSTED`.
pub fn build(
    class: CK_OBJECT_CLASS,
    template: &Template,
    mut attrs: Attributes,
    creation: Creation,
    logged_in_so: bool,
) -> Result<Attributes> {
    check_template_shape(class, template)?;
    attrs.set_ulong(CKA_CLASS, class);
    for (t, v) in template {
        let Some(rule) = rule(class, *t) else {
            continue;
        };
        match rule.origin {
            Token => {
                return Err(Error::template_inconsistent(format!(
                    "attribute 0x{t:x} is set by the token, not the template"
                )))
            }
            Secret if creation != Creation::Create => {
                return Err(Error::template_inconsistent(format!(
                    "attribute 0x{t:x} (key material) cannot be given here"
                )))
            }
            Secret => continue, // consumed by the caller into key material
            Caller => {}
        }
        if *t == CKA_CLASS && parse_ulong(*t, v)? != class {
            return Err(Error::template_inconsistent(
                "CKA_CLASS contradicts the operation",
            ));
        }
        if *t == CKA_KEY_TYPE {
            if let Some(kt) = attrs.key_type() {
                if parse_ulong(*t, v)? != kt {
                    return Err(Error::template_inconsistent(
                        "CKA_KEY_TYPE contradicts the mechanism or key",
                    ));
                }
            }
        }
        if *t == CKA_TRUSTED && parse_bool(*t, v)? && !logged_in_so {
            return Err(Error::new(
                CKR_ATTRIBUTE_READ_ONLY,
                "only the security officer may set CKA_TRUSTED",
            ));
        }
        attrs.set(*t, v.clone());
    }
    if matches!(class, CKO_SECRET_KEY | CKO_PRIVATE_KEY) {
        finish_secret_flags(&mut attrs, template, creation)?;
    }
    Ok(attrs)
}

/// Derive the `ALWAYS`/`NEVER` flags and enforce the CMK invariants.
fn finish_secret_flags(
    attrs: &mut Attributes,
    template: &Template,
    creation: Creation,
) -> Result<()> {
    if attrs.flag(CKA_TOKEN) {
        if creation != Creation::Generate {
            return Err(Error::template_inconsistent(
                "token keys are customer master keys: they are generated inside the HSM, \
                 never imported (use CKA_TOKEN=FALSE for a session key)",
            ));
        }
        if template_bool(template, CKA_SENSITIVE)? == Some(false) {
            return Err(Error::attr_value(
                CKA_SENSITIVE,
                "token keys are always sensitive",
            ));
        }
        if template_bool(template, CKA_EXTRACTABLE)? == Some(true) {
            return Err(Error::attr_value(
                CKA_EXTRACTABLE,
                "token keys are never extractable",
            ));
        }
        if template_bool(template, CKA_COPYABLE)? == Some(true) {
            return Err(Error::attr_value(
                CKA_COPYABLE,
                "token keys cannot be copied",
            ));
        }
        attrs.set_bool(CKA_SENSITIVE, true);
        attrs.set_bool(CKA_EXTRACTABLE, false);
        attrs.set_bool(CKA_COPYABLE, false);
    }
    let generated = creation == Creation::Generate;
    attrs.set_bool(CKA_ALWAYS_SENSITIVE, generated && attrs.flag(CKA_SENSITIVE));
    attrs.set_bool(
        CKA_NEVER_EXTRACTABLE,
        generated && !attrs.flag(CKA_EXTRACTABLE),
    );
    attrs.set_bool(CKA_LOCAL, generated);
    Ok(())
}

/// Check a `C_SetAttributeValue` template against the object and return the new
/// attribute set. Nothing changes unless every entry is allowed (all or nothing).
pub fn modify(current: &Attributes, template: &Template, logged_in_so: bool) -> Result<Attributes> {
    let class = current.class();
    if current.get(CKA_MODIFIABLE).is_some() && !current.flag(CKA_MODIFIABLE) {
        return Err(Error::new(
            CKR_ACTION_PROHIBITED,
            "object is not modifiable",
        ));
    }
    check_template_shape(class, template)?;
    let mut next = current.clone();
    for (t, v) in template {
        let Some(rule) = rule(class, *t) else {
            continue;
        };
        if current.get(*t) == Some(v.as_slice()) {
            continue; // setting a value to itself is always allowed
        }
        let allowed = match rule.change {
            Free => !(is_cmk(current) && is_usage_flag(*t)),
            CopyOnly | Never => false,
            LatchTrue => parse_bool(*t, v)?,
            LatchFalse => !parse_bool(*t, v)?,
        };
        if !allowed || rule.origin != Caller {
            return Err(Error::new(
                CKR_ATTRIBUTE_READ_ONLY,
                format!("attribute 0x{t:x} cannot be changed"),
            ));
        }
        if *t == CKA_TRUSTED && parse_bool(*t, v)? && !logged_in_so {
            return Err(Error::new(
                CKR_ATTRIBUTE_READ_ONLY,
                "only the security officer may set CKA_TRUSTED",
            ));
        }
        next.set(*t, v.clone());
    }
    Ok(next)
}

/// Check a `C_CopyObject` template: what `modify` allows plus `CKA_TOKEN`, `CKA_PRIVATE`
/// and `CKA_MODIFIABLE`. A secret or private key cannot become a token key this way
/// (token keys are only generated).
pub fn copy(current: &Attributes, template: &Template, logged_in_so: bool) -> Result<Attributes> {
    if current.get(CKA_COPYABLE).is_some() && !current.flag(CKA_COPYABLE) {
        return Err(Error::new(CKR_ACTION_PROHIBITED, "object is not copyable"));
    }
    let class = current.class();
    check_template_shape(class, template)?;
    let (copy_only, rest): (Template, Template) = template
        .iter()
        .cloned()
        .partition(|(t, _)| rule(class, *t).is_some_and(|r| r.change == CopyOnly));
    // CKA_MODIFIABLE=FALSE does not stop a copy from changing attributes.
    let mut unlocked = current.clone();
    unlocked.set_bool(CKA_MODIFIABLE, true);
    let mut next = modify(&unlocked, &rest, logged_in_so)?;
    next.set(
        CKA_MODIFIABLE,
        current.get(CKA_MODIFIABLE).unwrap_or(&[1]).to_vec(),
    );
    for (t, v) in copy_only {
        next.set(t, v);
    }
    if is_cmk(&next) && !is_cmk(current) {
        return Err(Error::template_inconsistent(
            "a copy cannot become a token key: token keys are generated inside the HSM",
        ));
    }
    Ok(next)
}

fn is_usage_flag(t: AttrType) -> bool {
    matches!(
        t,
        CKA_ENCRYPT
            | CKA_DECRYPT
            | CKA_SIGN
            | CKA_VERIFY
            | CKA_WRAP
            | CKA_UNWRAP
            | CKA_DERIVE
            | CKA_SIGN_RECOVER
            | CKA_VERIFY_RECOVER
    )
}

/// What `C_GetAttributeValue` answers for one attribute of an object.
pub enum Readable<'a> {
    Value(&'a [u8]),
    /// A standard attribute this object has no value for: an empty value.
    Empty,
    /// Key material; the caller fetches it only if `Readable` allowed it.
    Material,
    Sensitive,
    Invalid,
}

pub fn read(attrs: &Attributes, t: AttrType) -> Readable<'_> {
    let class = attrs.class();
    if is_secret_component(class, t) {
        if attrs.flag(CKA_SENSITIVE) || !attrs.flag(CKA_EXTRACTABLE) || is_cmk(attrs) {
            return Readable::Sensitive;
        }
        return Readable::Material;
    }
    match attrs.get(t) {
        Some(v) => Readable::Value(v),
        None if is_known(class, t) => Readable::Empty,
        None => Readable::Invalid,
    }
}

/// Defaults for a new key before its template is applied. Usage flags default to what
/// the key type can do, as SoftHSM2 and most HSMs do, so that Java and pkcs11-tool,
/// which rely on token defaults, get usable keys.
pub fn key_defaults(class: CK_OBJECT_CLASS, key_type: CK_KEY_TYPE) -> Attributes {
    let mut a = AttributesBuilder::new();
    a.set_ulong(CKA_CLASS, class);
    a.set_ulong(CKA_KEY_TYPE, key_type);
    a.set_bool(CKA_TOKEN, false);
    a.set_bool(CKA_PRIVATE, class != CKO_PUBLIC_KEY);
    a.set_bool(CKA_MODIFIABLE, true);
    a.set_bool(CKA_COPYABLE, true);
    a.set_bool(CKA_DESTROYABLE, true);
    a.set(CKA_LABEL, &[]);
    a.set(CKA_ID, &[]);
    a.set(CKA_START_DATE, &[]);
    a.set(CKA_END_DATE, &[]);
    a.set_bool(CKA_DERIVE, class == CKO_PRIVATE_KEY && key_type == CKK_EC);
    a.set_bool(CKA_LOCAL, false);
    a.set_ulong(CKA_KEY_GEN_MECHANISM, CK_UNAVAILABLE_INFORMATION);
    let (enc, sign, wrap) = match key_type {
        CKK_AES => (true, false, true),
        CKK_GENERIC_SECRET => (false, true, false),
        CKK_EC => (false, true, false),
        _ => (true, true, true), // RSA
    };
    match class {
        CKO_PUBLIC_KEY => {
            a.set_bool(CKA_ENCRYPT, enc);
            a.set_bool(CKA_VERIFY, sign);
            a.set_bool(CKA_VERIFY_RECOVER, false);
            a.set_bool(CKA_WRAP, wrap);
            a.set_bool(CKA_TRUSTED, false);
            a.set(CKA_SUBJECT, &[]);
        }
        CKO_PRIVATE_KEY => {
            a.set_bool(CKA_DECRYPT, enc);
            a.set_bool(CKA_SIGN, sign);
            a.set_bool(CKA_SIGN_RECOVER, false);
            a.set_bool(CKA_UNWRAP, wrap);
            a.set_bool(CKA_SENSITIVE, true);
            a.set_bool(CKA_EXTRACTABLE, true);
            a.set_bool(CKA_WRAP_WITH_TRUSTED, false);
            a.set_bool(CKA_ALWAYS_AUTHENTICATE, false);
            a.set(CKA_SUBJECT, &[]);
        }
        _ => {
            a.set_bool(CKA_ENCRYPT, enc);
            a.set_bool(CKA_DECRYPT, enc);
            a.set_bool(CKA_SIGN, sign);
            a.set_bool(CKA_VERIFY, sign);
            a.set_bool(CKA_WRAP, wrap);
            a.set_bool(CKA_UNWRAP, wrap);
            a.set_bool(CKA_SENSITIVE, true);
            // Session keys are wrappable unless the template says otherwise; token keys
            // never (enforced in `finish_secret_flags`).
            a.set_bool(CKA_EXTRACTABLE, true);
            a.set_bool(CKA_WRAP_WITH_TRUSTED, false);
            a.set_bool(CKA_TRUSTED, false);
        }
    }
    a.build()
}

/// Defaults for data objects and certificates.
pub fn storage_defaults(class: CK_OBJECT_CLASS) -> Attributes {
    let mut a = AttributesBuilder::new();
    a.set_ulong(CKA_CLASS, class);
    a.set_bool(CKA_TOKEN, false);
    a.set_bool(CKA_PRIVATE, false);
    a.set_bool(CKA_MODIFIABLE, true);
    a.set_bool(CKA_COPYABLE, true);
    a.set_bool(CKA_DESTROYABLE, true);
    a.set(CKA_LABEL, &[]);
    if class == CKO_CERTIFICATE {
        a.set_bool(CKA_TRUSTED, false);
        a.set_ulong(CKA_CERTIFICATE_CATEGORY, 0);
        a.set(CKA_ID, &[]);
        a.set(CKA_SUBJECT, &[]);
        a.set(CKA_ISSUER, &[]);
        a.set(CKA_SERIAL_NUMBER, &[]);
        a.set(CKA_START_DATE, &[]);
        a.set(CKA_END_DATE, &[]);
    } else {
        a.set(CKA_APPLICATION, &[]);
        a.set(CKA_OBJECT_ID, &[]);
        a.set(CKA_VALUE, &[]);
    }
    a.build()
}

/// A template's value for `t`, parsed as a `CK_ULONG`.
pub fn template_ulong(template: &Template, t: AttrType) -> Result<Option<CK_ULONG>> {
    template
        .iter()
        .find(|(u, _)| *u == t)
        .map(|(_, v)| parse_ulong(t, v))
        .transpose()
}

pub fn template_bytes(template: &Template, t: AttrType) -> Option<&[u8]> {
    template
        .iter()
        .find(|(u, _)| *u == t)
        .map(|(_, v)| v.as_slice())
}

pub fn template_bool(template: &Template, t: AttrType) -> Result<Option<bool>> {
    template
        .iter()
        .find(|(u, _)| *u == t)
        .map(|(_, v)| parse_bool(t, v))
        .transpose()
}
