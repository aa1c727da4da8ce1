//! Making objects: `C_CreateObject`, `C_CopyObject`, key generation, unwrap and derive.
//! Attribute decisions are the policy's; this file supplies defaults and the values
//! computed from key material.

use super::attribute::{AttrType, Attributes, Template};
use super::objects::Object;
use super::policy::{self, template_bytes, template_ulong, Creation, CKA_CKS_KEY_ID};
use super::{Login, Token};
use crate::error::{Error, Result};
use crate::hsm::crypto::KeyMaterial;
use crate::hsm::mechanism::{Curve, Mechanism};
use crate::hsm::KeySpec;
use crate::keystore::KeyStore;
use pkcs11_sys::*;
use uuid::Uuid;

/// DER of the named-curve OIDs (`CKA_EC_PARAMS`).
const P256_OID: &[u8] = &[0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07];
const P384_OID: &[u8] = &[0x06, 0x05, 0x2b, 0x81, 0x04, 0x00, 0x22];

pub fn curve_from_params(params: &[u8]) -> Result<Curve> {
    match params {
        P256_OID => Ok(Curve::P256),
        P384_OID => Ok(Curve::P384),
        b"prime256v1" | b"secp256r1" | b"P-256" => Ok(Curve::P256),
        b"secp384r1" | b"P-384" => Ok(Curve::P384),
        _ => Err(Error::new(
            CKR_CURVE_NOT_SUPPORTED,
            "only P-256 and P-384 are supported",
        )),
    }
}

pub fn curve_params(c: Curve) -> &'static [u8] {
    match c {
        Curve::P256 => P256_OID,
        Curve::P384 => P384_OID,
    }
}

/// `CKA_EC_POINT` is the point as a DER OCTET STRING.
pub fn der_octet_string(v: &[u8]) -> Vec<u8> {
    let mut out = vec![0x04];
    let n = v.len();
    if n < 0x80 {
        out.push(n as u8);
    } else if n < 0x100 {
        out.extend_from_slice(&[0x81, n as u8]);
    } else {
        out.extend_from_slice(&[0x82, (n >> 8) as u8, n as u8]);
    }
    out.extend_from_slice(v);
    out
}

/// Accept a point either DER-wrapped or raw (tools send both).
pub fn unwrap_octet_string(v: &[u8]) -> &[u8] {
    match v {
        [0x04, n, rest @ ..] if (*n as usize) == rest.len() && *n < 0x80 => rest,
        [0x04, 0x81, n, rest @ ..] if (*n as usize) == rest.len() => rest,
        _ => v,
    }
}

/// Public values of a key that its objects carry as attributes.
pub(crate) fn public_attrs(attrs: &mut Attributes, m: &KeyMaterial, class: CK_OBJECT_CLASS) {
    if let Some(c) = m.curve() {
        attrs.set(CKA_EC_PARAMS, curve_params(c).to_vec());
        if class == CKO_PUBLIC_KEY {
            if let Some(p) = m.ec_point() {
                attrs.set(CKA_EC_POINT, der_octet_string(&p));
            }
        }
    }
    if let (Some(n), Some(e)) = (m.rsa_modulus(), m.rsa_public_exponent()) {
        if class == CKO_PUBLIC_KEY {
            attrs.set_ulong(
                CKA_MODULUS_BITS,
                m.rsa_bits().unwrap_or(n.len() * 8) as CK_ULONG,
            );
        }
        attrs.set(CKA_MODULUS, n);
        attrs.set(CKA_PUBLIC_EXPONENT, e);
    }
}

/// A token key gets the CMK identity: its key id, and `CKA_ID`/`CKA_LABEL` from it when
/// the template gave none (a caller's own `CKA_ID` is never overwritten).
fn identity(attrs: &mut Attributes, key_id: Uuid) {
    attrs.set(CKA_CKS_KEY_ID, key_id.to_string().into_bytes());
    if attrs.flag(CKA_TOKEN) {
        if attrs.get(CKA_ID).is_none_or(|v| v.is_empty()) {
            attrs.set(CKA_ID, key_id.as_bytes().to_vec());
        }
        if attrs.get(CKA_LABEL).is_none_or(|v| v.is_empty()) {
            attrs.set(CKA_LABEL, key_id.to_string().into_bytes());
        }
    }
}

/// Keep only the attributes a class knows. Key-pair templates from Java and others
/// carry defaults meant for the other half; those are ignored, not refused.
fn for_class(class: CK_OBJECT_CLASS, template: &Template) -> Template {
    template
        .iter()
        .filter(|(t, _)| {
            policy::is_known(class, *t)
                || !(policy::is_known(CKO_PUBLIC_KEY, *t) || policy::is_known(CKO_PRIVATE_KEY, *t))
        })
        .cloned()
        .collect()
}

fn secret_len_ok(key_type: CK_KEY_TYPE, len: usize) -> Result<()> {
    let ok = match key_type {
        CKK_AES => matches!(len, 16 | 24 | 32),
        _ => (1..=512).contains(&len),
    };
    if !ok {
        return Err(Error::new(
            CKR_KEY_SIZE_RANGE,
            format!("{len}-byte key is out of range"),
        ));
    }
    Ok(())
}

impl Token {
    fn require_user(&self) -> Result<()> {
        if self.login_state() != Login::User {
            return Err(Error::new(
                CKR_USER_NOT_LOGGED_IN,
                "log in as user to make keys",
            ));
        }
        Ok(())
    }

    fn is_so(&self) -> bool {
        self.login_state() == Login::So
    }

    pub fn generate_key(
        &self,
        h: CK_SESSION_HANDLE,
        mech: &Mechanism,
        template: &Template,
    ) -> Result<CK_OBJECT_HANDLE> {
        let s = self.session(h)?;
        self.require_user()?;
        let (key_type, gen_mech) = match mech {
            Mechanism::AesKeyGen => (CKK_AES, CKM_AES_KEY_GEN),
            Mechanism::GenericSecretKeyGen => (CKK_GENERIC_SECRET, CKM_GENERIC_SECRET_KEY_GEN),
            _ => return Err(Error::mech_invalid("not a key generation mechanism")),
        };
        let len = template_ulong(template, CKA_VALUE_LEN)?
            .ok_or_else(|| Error::template_incomplete("CKA_VALUE_LEN is required"))?
            as usize;
        secret_len_ok(key_type, len)?;
        let mut attrs = policy::build(
            CKO_SECRET_KEY,
            template,
            policy::key_defaults(CKO_SECRET_KEY, key_type),
            Creation::Generate,
            self.is_so(),
        )?;
        self.check_writable(&s.lock(), attrs.flag(CKA_TOKEN), true)?;
        attrs.set_ulong(CKA_VALUE_LEN, len as CK_ULONG);
        attrs.set_ulong(CKA_KEY_GEN_MECHANISM, gen_mech);
        let uid = Uuid::new_v4();
        let token = attrs.flag(CKA_TOKEN);
        let described = describe(&attrs, key_type, len * 8);
        identity(&mut attrs, uid);
        let spec = match key_type {
            CKK_AES => KeySpec::Aes(len),
            _ => KeySpec::GenericSecret(len),
        };
        let (handle, _) = self.add_generated(h, uid, &spec, &|_| Ok(attrs.clone()))?;
        if token {
            self.register(h, uid, &[handle], None, described)?;
        }
        tracing::info!(key = %uid, "secret key generated");
        Ok(handle)
    }

    pub fn generate_key_pair(
        &self,
        h: CK_SESSION_HANDLE,
        mech: &Mechanism,
        pub_template: &Template,
        priv_template: &Template,
    ) -> Result<(CK_OBJECT_HANDLE, CK_OBJECT_HANDLE)> {
        let s = self.session(h)?;
        self.require_user()?;
        let pub_t = for_class(CKO_PUBLIC_KEY, pub_template);
        let priv_t = for_class(CKO_PRIVATE_KEY, priv_template);
        let (key_type, gen_mech, spec) = match mech {
            Mechanism::EcKeyPairGen => {
                let params = template_bytes(&pub_t, CKA_EC_PARAMS)
                    .or_else(|| template_bytes(&priv_t, CKA_EC_PARAMS))
                    .ok_or_else(|| Error::template_incomplete("CKA_EC_PARAMS is required"))?;
                let curve = curve_from_params(params)?;
                (CKK_EC, CKM_EC_KEY_PAIR_GEN, KeySpec::Ec(curve))
            }
            Mechanism::RsaKeyPairGen => {
                let bits = template_ulong(&pub_t, CKA_MODULUS_BITS)?
                    .ok_or_else(|| Error::template_incomplete("CKA_MODULUS_BITS is required"))?
                    as usize;
                if !(2048..=4096).contains(&bits) {
                    return Err(Error::new(
                        CKR_KEY_SIZE_RANGE,
                        format!("RSA modulus of {bits} bits"),
                    ));
                }
                let e = template_bytes(&pub_t, CKA_PUBLIC_EXPONENT).unwrap_or(&[]);
                let spec = KeySpec::Rsa {
                    bits,
                    public_exponent: e.to_vec(),
                };
                (CKK_RSA, CKM_RSA_PKCS_KEY_PAIR_GEN, spec)
            }
            _ => return Err(Error::mech_invalid("not a key-pair generation mechanism")),
        };
        // Values the token computes are not the template's to give.
        let strip = |t: &Template| -> Template {
            t.iter()
                .filter(|(a, _)| !matches!(*a, CKA_MODULUS | CKA_EC_POINT))
                .cloned()
                .collect()
        };
        let mut pub_attrs = policy::build(
            CKO_PUBLIC_KEY,
            &strip(&pub_t),
            policy::key_defaults(CKO_PUBLIC_KEY, key_type),
            Creation::Generate,
            self.is_so(),
        )?;
        let mut priv_attrs = policy::build(
            CKO_PRIVATE_KEY,
            &strip(&priv_t),
            policy::key_defaults(CKO_PRIVATE_KEY, key_type),
            Creation::Generate,
            self.is_so(),
        )?;
        {
            let s = s.lock();
            self.check_writable(&s, pub_attrs.flag(CKA_TOKEN), pub_attrs.flag(CKA_PRIVATE))?;
            self.check_writable(&s, priv_attrs.flag(CKA_TOKEN), true)?;
        }
        let bits = match &spec {
            KeySpec::Ec(c) => {
                for a in [&mut pub_attrs, &mut priv_attrs] {
                    a.set(CKA_EC_PARAMS, curve_params(*c).to_vec());
                }
                0
            }
            KeySpec::Rsa { bits, .. } => *bits,
            _ => 0,
        };
        for a in [&mut pub_attrs, &mut priv_attrs] {
            a.set_ulong(CKA_KEY_GEN_MECHANISM, gen_mech);
            a.set_bool(CKA_LOCAL, true);
        }
        let key_id = Uuid::new_v4();
        // Both halves share CKA_ID (tools pair keys and certificates by it).
        if priv_attrs.get(CKA_ID).is_none_or(|v| v.is_empty()) {
            if let Some(id) = pub_attrs.get(CKA_ID).filter(|v| !v.is_empty()) {
                priv_attrs.set(CKA_ID, id.to_vec());
            }
        }
        let token = priv_attrs.flag(CKA_TOKEN);
        let described = describe(&priv_attrs, key_type, bits);
        identity(&mut priv_attrs, key_id);
        if pub_attrs.get(CKA_ID).is_none_or(|v| v.is_empty()) {
            if let Some(id) = priv_attrs.get(CKA_ID) {
                pub_attrs.set(CKA_ID, id.to_vec());
            }
        }
        if pub_attrs.get(CKA_LABEL).is_none_or(|v| v.is_empty()) {
            if let Some(l) = priv_attrs.get(CKA_LABEL) {
                pub_attrs.set(CKA_LABEL, l.to_vec());
            }
        }
        pub_attrs.set(CKA_CKS_KEY_ID, key_id.to_string().into_bytes());
        let pub_uid = Uuid::new_v4();
        let pub_token = pub_attrs.flag(CKA_TOKEN);
        let (priv_h, public) = self.add_generated(h, key_id, &spec, &|public| {
            let mut a = priv_attrs.clone();
            if let Some(p) = public {
                public_attrs(&mut a, p, CKO_PRIVATE_KEY);
            }
            Ok(a)
        })?;
        let Some(public) = public else {
            self.discard(priv_h);
            return Err(Error::general("generated key has no public half"));
        };
        public_attrs(&mut pub_attrs, &public, CKO_PUBLIC_KEY);
        let pub_h = match self.add_object(h, pub_uid, pub_attrs, Some(public)) {
            Ok(ph) => ph,
            Err(e) => {
                // Leave no half-made pair behind.
                self.discard(priv_h);
                return Err(e);
            }
        };
        if token {
            let public = pub_token.then_some(pub_uid);
            self.register(h, key_id, &[priv_h, pub_h], public, described)?;
        }
        tracing::info!(key = %key_id, "key pair generated");
        Ok((pub_h, priv_h))
    }

    /// A token key just generated becomes a CMK; if its record cannot be written, the
    /// key is removed again (nothing half-made stays visible).
    fn register(
        &self,
        _h: CK_SESSION_HANDLE,
        key_id: Uuid,
        handles: &[CK_OBJECT_HANDLE],
        public: Option<Uuid>,
        (spec, usage, alias): (String, String, Option<String>),
    ) -> Result<()> {
        let r =
            self.keystore()
                .register_cmk(key_id, key_id, public, spec, usage, alias, String::new());
        if let Err(e) = r {
            for &oh in handles {
                self.discard(oh);
            }
            return Err(e);
        }
        Ok(())
    }

    pub fn create_object(
        &self,
        h: CK_SESSION_HANDLE,
        template: &Template,
    ) -> Result<CK_OBJECT_HANDLE> {
        let s = self.session(h)?;
        let class = template_ulong(template, CKA_CLASS)?
            .ok_or_else(|| Error::template_incomplete("CKA_CLASS is required"))?;
        let (defaults, material) = match class {
            CKO_DATA => (policy::storage_defaults(class), None),
            CKO_CERTIFICATE => {
                let ct = template_ulong(template, CKA_CERTIFICATE_TYPE)?.ok_or_else(|| {
                    Error::template_incomplete("CKA_CERTIFICATE_TYPE is required")
                })?;
                if ct != CKC_X_509 {
                    return Err(Error::attr_value(
                        CKA_CERTIFICATE_TYPE,
                        "only X.509 certificates",
                    ));
                }
                if template_bytes(template, CKA_VALUE).is_none() {
                    return Err(Error::template_incomplete("CKA_VALUE is required"));
                }
                (policy::storage_defaults(class), None)
            }
            CKO_PUBLIC_KEY | CKO_PRIVATE_KEY | CKO_SECRET_KEY => {
                let kt = template_ulong(template, CKA_KEY_TYPE)?
                    .ok_or_else(|| Error::template_incomplete("CKA_KEY_TYPE is required"))?;
                (
                    policy::key_defaults(class, kt),
                    Some(material_from_template(class, kt, template)?),
                )
            }
            _ => return Err(Error::attr_value(CKA_CLASS, "unsupported object class")),
        };
        let mut attrs = policy::build(class, template, defaults, Creation::Create, self.is_so())?;
        let private = attrs.flag(CKA_PRIVATE);
        self.check_writable(&s.lock(), attrs.flag(CKA_TOKEN), private)?;
        if matches!(class, CKO_SECRET_KEY | CKO_PRIVATE_KEY) {
            self.require_user()?;
        }
        if let Some(m) = &material {
            public_attrs(&mut attrs, m, class);
            if let Some(n) = m.secret_len() {
                attrs.set_ulong(CKA_VALUE_LEN, n as CK_ULONG);
            }
            if class == CKO_PUBLIC_KEY {
                // The template's own encoding of the point stays as given.
                if let Some(p) = template_bytes(template, CKA_EC_POINT) {
                    attrs.set(CKA_EC_POINT, p.to_vec());
                }
            }
        }
        let uid = Uuid::new_v4();
        if class != CKO_DATA && class != CKO_CERTIFICATE {
            identity(&mut attrs, uid);
        }
        self.add_object(h, uid, attrs, material)
    }

    pub fn copy_object(
        &self,
        h: CK_SESSION_HANDLE,
        oh: CK_OBJECT_HANDLE,
        template: &Template,
    ) -> Result<CK_OBJECT_HANDLE> {
        let s = self.session(h)?;
        let obj = self.object(oh)?;
        let attrs = policy::copy(&obj.attrs, template, self.is_so())?;
        self.check_writable(&s.lock(), attrs.flag(CKA_TOKEN), attrs.flag(CKA_PRIVATE))?;
        let material = match obj.attrs.class() {
            CKO_SECRET_KEY | CKO_PRIVATE_KEY | CKO_PUBLIC_KEY => {
                Some((*self.keystore().cluster.material(obj.uid)?).clone())
            }
            _ => None,
        };
        self.add_object(h, Uuid::new_v4(), attrs, material)
    }

    fn unwrap_key_inner(
        &self,
        h: CK_SESSION_HANDLE,
        mech: &Mechanism,
        mech_type: CK_MECHANISM_TYPE,
        unwrapping: CK_OBJECT_HANDLE,
        wrapped: &[u8],
        template: &Template,
    ) -> Result<CK_OBJECT_HANDLE> {
        let s = self.session(h)?;
        self.require_user()?;
        let key = self
            .key_for(unwrapping, mech_type, CKF_UNWRAP)
            .map_err(|e| {
                as_wrapping_key_error(
                    e,
                    CKR_UNWRAPPING_KEY_HANDLE_INVALID,
                    CKR_UNWRAPPING_KEY_TYPE_INCONSISTENT,
                )
            })?;
        let class = template_ulong(template, CKA_CLASS)?
            .ok_or_else(|| Error::template_incomplete("CKA_CLASS is required"))?;
        if !matches!(class, CKO_SECRET_KEY | CKO_PRIVATE_KEY) {
            return Err(Error::template_inconsistent(
                "only secret and private keys unwrap",
            ));
        }
        let material = self
            .keystore()
            .cluster
            .run(|i| i.unwrap(mech, key.uid, wrapped, class == CKO_PRIVATE_KEY))
            .map(|(m, _)| m)
            .map_err(|e| match e.rv {
                CKR_ENCRYPTED_DATA_INVALID => Error::new(CKR_WRAPPED_KEY_INVALID, e.msg),
                CKR_ENCRYPTED_DATA_LEN_RANGE => Error::new(CKR_WRAPPED_KEY_LEN_RANGE, e.msg),
                _ => e,
            })?;
        let kt = match (&material, template_ulong(template, CKA_KEY_TYPE)?) {
            (KeyMaterial::Secret(_), Some(kt)) => kt,
            (KeyMaterial::Secret(_), None) => {
                return Err(Error::template_incomplete("CKA_KEY_TYPE is required"))
            }
            (m, Some(kt)) if kt == material_key_type(m) => kt,
            (m, None) => material_key_type(m),
            _ => {
                return Err(Error::template_inconsistent(
                    "CKA_KEY_TYPE does not match the key",
                ))
            }
        };
        if let Some(n) = material.secret_len() {
            secret_len_ok(kt, n).map_err(|e| Error::new(CKR_WRAPPED_KEY_INVALID, e.msg))?;
        }
        // CKA_VALUE_LEN may be given for secret keys; it must agree.
        let template: Template = template
            .iter()
            .filter(|(t, _)| *t != CKA_VALUE_LEN)
            .cloned()
            .collect();
        let mut attrs = policy::build(
            class,
            &template,
            policy::key_defaults(class, kt),
            Creation::Import,
            self.is_so(),
        )?;
        self.check_writable(&s.lock(), attrs.flag(CKA_TOKEN), true)?;
        public_attrs(&mut attrs, &material, class);
        if let Some(n) = material.secret_len() {
            attrs.set_ulong(CKA_VALUE_LEN, n as CK_ULONG);
        }
        let uid = Uuid::new_v4();
        identity(&mut attrs, uid);
        self.add_object(h, uid, attrs, Some(material))
    }

    fn derive_key_inner(
        &self,
        h: CK_SESSION_HANDLE,
        mech: &Mechanism,
        mech_type: CK_MECHANISM_TYPE,
        base: CK_OBJECT_HANDLE,
        template: &Template,
    ) -> Result<CK_OBJECT_HANDLE> {
        let s = self.session(h)?;
        self.require_user()?;
        let key = self.key_for(base, mech_type, CKF_DERIVE)?;
        let Mechanism::Ecdh1Derive {
            kdf,
            shared_data,
            public_data,
        } = mech
        else {
            return Err(Error::mech_invalid("not a derivation mechanism"));
        };
        let class = template_ulong(template, CKA_CLASS)?.unwrap_or(CKO_SECRET_KEY);
        if class != CKO_SECRET_KEY {
            return Err(Error::template_inconsistent("ECDH derives secret keys"));
        }
        let kt = template_ulong(template, CKA_KEY_TYPE)?
            .ok_or_else(|| Error::template_incomplete("CKA_KEY_TYPE is required"))?;
        let len = match (template_ulong(template, CKA_VALUE_LEN)?, kt) {
            (Some(n), _) => n as usize,
            (None, CKK_AES) => 32,
            (None, _) => return Err(Error::template_incomplete("CKA_VALUE_LEN is required")),
        };
        secret_len_ok(kt, len)?;
        let template: Template = template
            .iter()
            .filter(|(t, _)| *t != CKA_VALUE_LEN)
            .cloned()
            .collect();
        let mut attrs = policy::build(
            CKO_SECRET_KEY,
            &template,
            policy::key_defaults(CKO_SECRET_KEY, kt),
            Creation::Import,
            self.is_so(),
        )?;
        self.check_writable(&s.lock(), attrs.flag(CKA_TOKEN), true)?;
        let (secret, _) = self
            .keystore()
            .cluster
            .run(|i| i.ecdh_derive(key.uid, *kdf, shared_data, public_data, len))?;
        attrs.set_ulong(CKA_VALUE_LEN, len as CK_ULONG);
        let uid = Uuid::new_v4();
        identity(&mut attrs, uid);
        self.add_object(h, uid, attrs, Some(KeyMaterial::Secret(secret)))
    }

    fn wrap_key_inner(
        &self,
        h: CK_SESSION_HANDLE,
        mech: &Mechanism,
        mech_type: CK_MECHANISM_TYPE,
        wrapping: CK_OBJECT_HANDLE,
        target: CK_OBJECT_HANDLE,
        cap: Option<usize>,
    ) -> Result<super::Out> {
        self.session(h)?;
        self.require_user()?;
        let wk = self.key_for(wrapping, mech_type, CKF_WRAP).map_err(|e| {
            as_wrapping_key_error(
                e,
                CKR_WRAPPING_KEY_HANDLE_INVALID,
                CKR_WRAPPING_KEY_TYPE_INCONSISTENT,
            )
        })?;
        let tk = self.object(target).map_err(|e| match e.rv {
            CKR_OBJECT_HANDLE_INVALID => Error::new(CKR_KEY_HANDLE_INVALID, e.msg),
            _ => e,
        })?;
        if !matches!(tk.attrs.class(), CKO_SECRET_KEY | CKO_PRIVATE_KEY) {
            return Err(Error::new(
                CKR_KEY_NOT_WRAPPABLE,
                "only secret and private keys wrap",
            ));
        }
        if policy::is_cmk(&tk.attrs) || !tk.attrs.flag(CKA_EXTRACTABLE) {
            return Err(Error::new(
                CKR_KEY_UNEXTRACTABLE,
                "the key is not extractable",
            ));
        }
        if tk.attrs.flag(CKA_WRAP_WITH_TRUSTED) && !wk.attrs.flag(CKA_TRUSTED) {
            return Err(Error::new(
                CKR_KEY_NOT_WRAPPABLE,
                "the key may only be wrapped with a trusted key",
            ));
        }
        let (wrapped, _) = self
            .keystore()
            .cluster
            .run(|i| i.wrap(mech, wk.uid, tk.uid))?;
        Ok(super::Out::deliver(wrapped, cap).0)
    }

    pub fn wrap_key(
        &self,
        h: CK_SESSION_HANDLE,
        mech: &Mechanism,
        mech_type: CK_MECHANISM_TYPE,
        wrapping: CK_OBJECT_HANDLE,
        target: CK_OBJECT_HANDLE,
        cap: Option<usize>,
    ) -> Result<super::Out> {
        let start = std::time::Instant::now();
        self.keystore().cluster.take_last_served();
        let r = self.wrap_key_inner(h, mech, mech_type, wrapping, target, cap);
        self.audit_use(
            h,
            crate::audit::ops::WRAP,
            mech_type,
            wrapping,
            start,
            r.as_ref().map(|_| ()),
        )?;
        r
    }

    pub fn unwrap_key(
        &self,
        h: CK_SESSION_HANDLE,
        mech: &Mechanism,
        mech_type: CK_MECHANISM_TYPE,
        unwrapping: CK_OBJECT_HANDLE,
        wrapped: &[u8],
        template: &Template,
    ) -> Result<CK_OBJECT_HANDLE> {
        let start = std::time::Instant::now();
        self.keystore().cluster.take_last_served();
        let r = self.unwrap_key_inner(h, mech, mech_type, unwrapping, wrapped, template);
        self.audit_use(
            h,
            crate::audit::ops::UNWRAP,
            mech_type,
            unwrapping,
            start,
            r.as_ref().map(|_| ()),
        )?;
        r
    }

    pub fn derive_key(
        &self,
        h: CK_SESSION_HANDLE,
        mech: &Mechanism,
        mech_type: CK_MECHANISM_TYPE,
        base: CK_OBJECT_HANDLE,
        template: &Template,
    ) -> Result<CK_OBJECT_HANDLE> {
        let start = std::time::Instant::now();
        self.keystore().cluster.take_last_served();
        let r = self.derive_key_inner(h, mech, mech_type, base, template);
        self.audit_use(
            h,
            crate::audit::ops::DERIVE,
            mech_type,
            base,
            start,
            r.as_ref().map(|_| ()),
        )?;
        r
    }

    /// Record a one-call key use (wrap, unwrap, derive) and its result.
    fn audit_use(
        &self,
        h: CK_SESSION_HANDLE,
        op: &'static str,
        mech_type: CK_MECHANISM_TYPE,
        key: CK_OBJECT_HANDLE,
        start: std::time::Instant,
        result: std::result::Result<(), &Error>,
    ) -> Result<()> {
        let obj = self.objects.read().get(key);
        let key_id = obj.as_ref().and_then(|o| o.key_id.clone());
        let version = obj
            .as_ref()
            .and_then(|o| self.keystore().cmk_of(o.uid).ok().flatten())
            .map(|(_, v)| v);
        let audit = super::session::OpAudit {
            op,
            mechanism: super::mechanisms::name(mech_type),
            key_id,
            version,
            instance: self.keystore().cluster.take_last_served(),
            user: self.audit_user(),
            start,
        };
        self.keystore()
            .audit
            .record(audit.event(h, result))
            .map_err(Error::from)
    }

    /// The key behind `h` for an operation: the mechanism serves the function, the key
    /// type fits the mechanism, and the key's usage attribute allows it.
    pub(super) fn key_for(
        &self,
        h: CK_OBJECT_HANDLE,
        mech: CK_MECHANISM_TYPE,
        function: CK_FLAGS,
    ) -> Result<std::sync::Arc<Object>> {
        self.key_for_version(h, mech, function).map(|(o, _)| o)
    }

    /// As `key_for`, with the CMK version the object holds (for the audit record).
    pub(super) fn key_for_version(
        &self,
        h: CK_OBJECT_HANDLE,
        mech: CK_MECHANISM_TYPE,
        function: CK_FLAGS,
    ) -> Result<(std::sync::Arc<Object>, Option<u32>)> {
        let info = super::mechanisms::info(mech)
            .filter(|i| i.flags & function != 0)
            .ok_or_else(|| Error::mech_invalid(format!("mechanism 0x{mech:x} cannot do this")))?;
        let obj = self.object(h).map_err(|e| match e.rv {
            CKR_OBJECT_HANDLE_INVALID => Error::new(CKR_KEY_HANDLE_INVALID, e.msg),
            _ => e,
        })?;
        let class = obj.attrs.class();
        let (classes, usage): (&[CK_OBJECT_CLASS], AttrType) = match function {
            CKF_ENCRYPT => (&[CKO_SECRET_KEY, CKO_PUBLIC_KEY], CKA_ENCRYPT),
            CKF_DECRYPT => (&[CKO_SECRET_KEY, CKO_PRIVATE_KEY], CKA_DECRYPT),
            CKF_SIGN => (&[CKO_SECRET_KEY, CKO_PRIVATE_KEY], CKA_SIGN),
            CKF_VERIFY => (&[CKO_SECRET_KEY, CKO_PUBLIC_KEY], CKA_VERIFY),
            CKF_WRAP => (&[CKO_SECRET_KEY, CKO_PUBLIC_KEY], CKA_WRAP),
            CKF_UNWRAP => (&[CKO_SECRET_KEY, CKO_PRIVATE_KEY], CKA_UNWRAP),
            _ => (&[CKO_PRIVATE_KEY], CKA_DERIVE),
        };
        let kt = obj.attrs.key_type().unwrap_or(CK_UNAVAILABLE_INFORMATION);
        if !classes.contains(&class) || !info.key_types.contains(&kt) {
            return Err(Error::key_type(format!(
                "key type 0x{kt:x} (class {class}) does not fit mechanism 0x{mech:x}"
            )));
        }
        if !obj.attrs.flag(usage) {
            return Err(Error::new(
                CKR_KEY_FUNCTION_NOT_PERMITTED,
                format!("the key's usage attribute 0x{usage:x} is FALSE"),
            ));
        }
        if let Some(allowed) = obj
            .attrs
            .get(CKA_ALLOWED_MECHANISMS)
            .filter(|v| !v.is_empty())
        {
            let n = std::mem::size_of::<CK_ULONG>();
            let permitted = allowed
                .chunks_exact(n)
                .any(|c| c.try_into().map(CK_ULONG::from_ne_bytes).ok() == Some(mech));
            if !permitted {
                return Err(Error::mech_invalid(
                    "mechanism not in the key's CKA_ALLOWED_MECHANISMS",
                ));
            }
        }
        let what = match function {
            CKF_DECRYPT | CKF_VERIFY | CKF_UNWRAP => crate::kms::lifecycle::Use::Unprotect,
            // Envelope encryption always uses the current version, whichever version's
            // object was named (checked there).
            _ if mech == super::mechanisms::CKM_CKS_ENVELOPE => {
                crate::kms::lifecycle::Use::Unprotect
            }
            _ => crate::kms::lifecycle::Use::Protect,
        };
        let version = self.keystore().check_use(obj.uid, what)?;
        // Secret and private keys need the user whatever their CKA_PRIVATE says (tools
        // such as pkcs11-tool make token keys with CKA_PRIVATE=FALSE).
        let needs_user = obj.is_private() || matches!(class, CKO_SECRET_KEY | CKO_PRIVATE_KEY);
        if needs_user && self.login_state() != Login::User {
            return Err(Error::new(
                CKR_USER_NOT_LOGGED_IN,
                "key use needs the user logged in",
            ));
        }
        Ok((obj, version))
    }
}

/// Key spec, key usage and alias of a new CMK, from the key and its template.
fn describe(
    attrs: &Attributes,
    key_type: CK_KEY_TYPE,
    bits: usize,
) -> (String, String, Option<String>) {
    let spec = match key_type {
        CKK_AES => format!("AES_{bits}"),
        CKK_EC => match attrs.get(CKA_EC_PARAMS) {
            Some(P384_OID) => "ECC_NIST_P384".to_string(),
            _ => "ECC_NIST_P256".to_string(),
        },
        CKK_RSA => format!("RSA_{bits}"),
        _ => format!("HMAC_{bits}"),
    };
    let usage = match key_type {
        CKK_GENERIC_SECRET => "GENERATE_VERIFY_MAC",
        CKK_EC => "SIGN_VERIFY",
        CKK_RSA if attrs.flag(CKA_SIGN) => "SIGN_VERIFY",
        CKK_RSA => "ENCRYPT_DECRYPT",
        _ if !attrs.flag(CKA_ENCRYPT) && attrs.flag(CKA_WRAP) => "WRAP_UNWRAP",
        _ => "ENCRYPT_DECRYPT",
    };
    // A label in the template becomes the key's alias when it is a valid alias name.
    let alias = attrs
        .get(CKA_LABEL)
        .map(|l| String::from_utf8_lossy(l).to_string())
        .filter(|l| !l.is_empty())
        .map(|l| {
            if l.starts_with("alias/") {
                l
            } else {
                format!("alias/{l}")
            }
        })
        .filter(|a| crate::kms::check_alias(a).is_ok());
    (spec.to_string(), usage.to_string(), alias)
}

/// The wrapping function's own codes for a bad wrapping/unwrapping key (v2.40 §5.13).
fn as_wrapping_key_error(e: Error, handle: CK_RV, kind: CK_RV) -> Error {
    match e.rv {
        CKR_KEY_HANDLE_INVALID => Error::new(handle, e.msg),
        CKR_KEY_TYPE_INCONSISTENT => Error::new(kind, e.msg),
        _ => e,
    }
}

fn material_key_type(m: &KeyMaterial) -> CK_KEY_TYPE {
    if m.curve().is_some() {
        CKK_EC
    } else if m.rsa_bits().is_some() {
        CKK_RSA
    } else {
        CKK_GENERIC_SECRET
    }
}

/// Key material given in a `C_CreateObject` template.
fn material_from_template(
    class: CK_OBJECT_CLASS,
    kt: CK_KEY_TYPE,
    t: &Template,
) -> Result<KeyMaterial> {
    let need = |a: AttrType, name: &str| {
        template_bytes(t, a)
            .ok_or_else(|| Error::template_incomplete(format!("{name} is required")))
    };
    match (class, kt) {
        (
            CKO_SECRET_KEY,
            CKK_AES | CKK_GENERIC_SECRET | CKK_SHA_1_HMAC | CKK_SHA224_HMAC | CKK_SHA256_HMAC
            | CKK_SHA384_HMAC | CKK_SHA512_HMAC,
        ) => {
            let v = need(CKA_VALUE, "CKA_VALUE")?;
            secret_len_ok(kt, v.len())?;
            if let Some(n) = template_ulong(t, CKA_VALUE_LEN)? {
                if n as usize != v.len() {
                    return Err(Error::template_inconsistent(
                        "CKA_VALUE_LEN contradicts CKA_VALUE",
                    ));
                }
            }
            Ok(KeyMaterial::Secret(zeroize::Zeroizing::new(v.to_vec())))
        }
        (CKO_PUBLIC_KEY, CKK_EC) => {
            let curve = curve_from_params(need(CKA_EC_PARAMS, "CKA_EC_PARAMS")?)?;
            let point = unwrap_octet_string(need(CKA_EC_POINT, "CKA_EC_POINT")?);
            KeyMaterial::ec_public_from_point(curve, point)
        }
        (CKO_PUBLIC_KEY, CKK_RSA) => KeyMaterial::rsa_public_from(
            need(CKA_MODULUS, "CKA_MODULUS")?,
            need(CKA_PUBLIC_EXPONENT, "CKA_PUBLIC_EXPONENT")?,
        ),
        (CKO_PRIVATE_KEY, CKK_EC) => {
            let curve = curve_from_params(need(CKA_EC_PARAMS, "CKA_EC_PARAMS")?)?;
            KeyMaterial::ec_private_from_scalar(curve, need(CKA_VALUE, "CKA_VALUE")?)
        }
        (CKO_PRIVATE_KEY, CKK_RSA) => KeyMaterial::rsa_private_from_components(
            need(CKA_MODULUS, "CKA_MODULUS")?,
            need(CKA_PUBLIC_EXPONENT, "CKA_PUBLIC_EXPONENT")?,
            need(CKA_PRIVATE_EXPONENT, "CKA_PRIVATE_EXPONENT")?,
            need(CKA_PRIME_1, "CKA_PRIME_1")?,
            need(CKA_PRIME_2, "CKA_PRIME_2")?,
        ),
        _ => Err(Error::attr_value(
            CKA_KEY_TYPE,
            "unsupported key type for this class",
        )),
    }
}

/// The value of a key-material attribute of a key that is neither sensitive nor
/// unextractable (the policy has checked that).
pub fn material_component(
    keystore: &KeyStore,
    obj: &Object,
    t: AttrType,
) -> Result<Option<Vec<u8>>> {
    let m = keystore.cluster.material(obj.uid)?;
    Ok(match (&*m, t) {
        (KeyMaterial::Secret(v), CKA_VALUE) => Some(v.to_vec()),
        (m, t) => m.private_component(t).map(|v| v.to_vec()),
    })
}
