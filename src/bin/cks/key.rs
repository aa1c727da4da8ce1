//! `cks key`: customer master keys — create, list, describe, enable, disable, rotate,
//! aliases, deletion windows and purge.
//!
//! Keys are named by key id, ARN or alias (`alias/NAME`, or just `NAME`) everywhere.
//! Only `create`, `rotate` and `purge` touch key material and ask for the user PIN;
//! every other command changes metadata only. Every command first carries out the
//! deletions that are due.

use cks_pkcs11::config::Config;
use cks_pkcs11::error::Error;
use cks_pkcs11::hsm::embedded::PinUser;
use cks_pkcs11::hsm::mechanism::Mechanism;
use cks_pkcs11::keystore::KeyStore;
use cks_pkcs11::kms::lifecycle::PurgeProof;
use cks_pkcs11::kms::{check_alias, rfc3339, Cmk, KeyState};
use cks_pkcs11::token::attribute::{bool_bytes, ulong_bytes, Template};
use cks_pkcs11::token::policy::CKA_CKS_KEY_ID;
use cks_pkcs11::token::{AttrValue, Token};
use clap::{ArgGroup, ValueEnum};
use pkcs11_sys::*;
use serde::Serialize;

const AFTER_HELP: &str = "\
Keys are named by key id (a UUID), ARN (arn:cks:kms:STORE:key/ID) or alias (alias/NAME).

States: Enabled (usable), Disabled (every use refused with CKR_KEY_FUNCTION_NOT_PERMITTED),
PendingDeletion (refused, deleted on its deletion date unless cancelled), Unavailable
(the key store is disconnected). Changes reach running applications within a second.

Examples:
  cks key create --spec AES_256 --alias alias/tde-master
  cks key list
  cks key disable alias/tde-master && cks key enable alias/tde-master
  cks key rotate alias/tde-master
  cks key schedule-deletion alias/tde-master --days 7
  cks key purge alias/old-key --yes

Exit codes: 0 success, 1 the operation failed (the message says why and what to do),
2 bad usage.";

#[derive(clap::Subcommand)]
#[command(after_help = AFTER_HELP)]
pub enum KeyCommand {
    /// Create a key in every HSM instance (needs the user PIN).
    #[command(after_help = "\
Key specs and the usages they allow (the first is the default):
  AES_256                                    ENCRYPT_DECRYPT, WRAP_UNWRAP
  ECC_NIST_P256, ECC_NIST_P384               SIGN_VERIFY
  RSA_2048, RSA_3072, RSA_4096               SIGN_VERIFY, ENCRYPT_DECRYPT
  HMAC_256                                   GENERATE_VERIFY_MAC

The key is a PKCS#11 token object: CKA_LABEL is its alias (or its key id), CKA_ID its key id.
An alias already in use is refused; move it with `cks key alias KEY alias/NAME`.

Example: cks key create --spec ECC_NIST_P256 --alias alias/signer --description 'release signing' --json")]
    Create {
        /// Key spec.
        #[arg(long, value_enum, ignore_case = true)]
        spec: Spec,
        /// Alias for the new key, alias/NAME (letters, digits, / _ -); must be unused.
        #[arg(long, value_name = "alias/NAME")]
        alias: Option<String>,
        /// What the key is for (default: by spec, see below).
        #[arg(long, value_enum, ignore_case = true)]
        usage: Option<Usage>,
        /// Free text shown by describe and list --json.
        #[arg(long, default_value = "")]
        description: String,
        /// User PIN (or $CKS_PIN, or a prompt).
        #[arg(long)]
        pin: Option<String>,
        /// Print the new key as one JSON object.
        #[arg(long)]
        json: bool,
    },
    /// List every key of the key store.
    List {
        /// Print a JSON array of key objects.
        #[arg(long)]
        json: bool,
    },
    /// Show one key: state, aliases, versions, dates.
    Describe {
        /// Key id, ARN or alias.
        key: String,
        /// Print the key as one JSON object.
        #[arg(long)]
        json: bool,
    },
    /// Allow the key to be used again (a key pending deletion needs cancel-deletion first).
    Enable {
        /// Key id, ARN or alias.
        key: String,
    },
    /// Refuse every use of the key (CKR_KEY_FUNCTION_NOT_PERMITTED) until it is enabled.
    Disable {
        /// Key id, ARN or alias.
        key: String,
    },
    /// Add a new version: it encrypts and signs from now on; older versions still
    /// decrypt and verify (needs the user PIN).
    Rotate {
        /// Key id, ARN or alias.
        key: String,
        /// User PIN (or $CKS_PIN, or a prompt).
        #[arg(long)]
        pin: Option<String>,
        /// Print the key as one JSON object.
        #[arg(long)]
        json: bool,
    },
    /// Rotate automatically every N days, or stop doing so.
    #[command(group(ArgGroup::new("period").required(true).args(["days", "off"])))]
    Rotation {
        /// Key id, ARN or alias.
        key: String,
        /// Days between automatic rotations (1 to 2560).
        #[arg(long, value_parser = clap::value_parser!(u32).range(1..=2560))]
        days: Option<u32>,
        /// Rotate by hand only.
        #[arg(long)]
        off: bool,
    },
    /// Point an alias at a key; an alias another key has is moved.
    Alias {
        /// Key id, ARN or alias.
        key: String,
        /// The alias, alias/NAME.
        #[arg(value_name = "alias/NAME")]
        alias: String,
    },
    /// Remove an alias (the key stays).
    Unalias {
        /// The alias, alias/NAME.
        #[arg(value_name = "alias/NAME")]
        alias: String,
    },
    /// Delete the key after a waiting period; until then it is unusable and the deletion
    /// can be cancelled.
    #[command(name = "schedule-deletion")]
    ScheduleDeletion {
        /// Key id, ARN or alias.
        key: String,
        /// Waiting period in days (from the configured minimum to 30; default:
        /// keystore.default_pending_days).
        #[arg(long)]
        days: Option<f64>,
    },
    /// Cancel a scheduled deletion; the key comes back Disabled (enable it to use it).
    #[command(name = "cancel-deletion")]
    CancelDeletion {
        /// Key id, ARN or alias.
        key: String,
    },
    /// Destroy the key in every HSM instance now, and prove it by asking each instance
    /// afterwards. Irreversible: data encrypted under the key is lost (needs the user PIN).
    Purge {
        /// Key id, ARN or alias.
        key: String,
        /// Confirm that the key and everything it protects are to be destroyed.
        #[arg(long)]
        yes: bool,
        /// User PIN (or $CKS_PIN, or a prompt).
        #[arg(long)]
        pin: Option<String>,
        /// Print the proof as one JSON object.
        #[arg(long)]
        json: bool,
    },
}

#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Spec {
    #[value(name = "AES_256")]
    Aes256,
    #[value(name = "ECC_NIST_P256")]
    EccNistP256,
    #[value(name = "ECC_NIST_P384")]
    EccNistP384,
    #[value(name = "RSA_2048")]
    Rsa2048,
    #[value(name = "RSA_3072")]
    Rsa3072,
    #[value(name = "RSA_4096")]
    Rsa4096,
    #[value(name = "HMAC_256")]
    Hmac256,
}

#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Usage {
    #[value(name = "ENCRYPT_DECRYPT")]
    EncryptDecrypt,
    #[value(name = "SIGN_VERIFY")]
    SignVerify,
    #[value(name = "GENERATE_VERIFY_MAC")]
    GenerateVerifyMac,
    #[value(name = "WRAP_UNWRAP")]
    WrapUnwrap,
}

impl Spec {
    fn name(self) -> &'static str {
        match self {
            Spec::Aes256 => "AES_256",
            Spec::EccNistP256 => "ECC_NIST_P256",
            Spec::EccNistP384 => "ECC_NIST_P384",
            Spec::Rsa2048 => "RSA_2048",
            Spec::Rsa3072 => "RSA_3072",
            Spec::Rsa4096 => "RSA_4096",
            Spec::Hmac256 => "HMAC_256",
        }
    }

    /// The usages a spec allows; the first is the default.
    fn usages(self) -> &'static [Usage] {
        match self {
            Spec::Aes256 => &[Usage::EncryptDecrypt, Usage::WrapUnwrap],
            Spec::EccNistP256 | Spec::EccNistP384 => &[Usage::SignVerify],
            Spec::Rsa2048 | Spec::Rsa3072 | Spec::Rsa4096 => {
                &[Usage::SignVerify, Usage::EncryptDecrypt]
            }
            Spec::Hmac256 => &[Usage::GenerateVerifyMac],
        }
    }
}

impl Usage {
    fn name(self) -> &'static str {
        match self {
            Usage::EncryptDecrypt => "ENCRYPT_DECRYPT",
            Usage::SignVerify => "SIGN_VERIFY",
            Usage::GenerateVerifyMac => "GENERATE_VERIFY_MAC",
            Usage::WrapUnwrap => "WRAP_UNWRAP",
        }
    }
}

/// A key as `--json` prints it (a contract other tools rely on).
#[derive(Serialize)]
pub struct KeyView {
    pub id: String,
    pub arn: String,
    pub aliases: Vec<String>,
    pub description: String,
    pub spec: String,
    pub usage: String,
    /// `Enabled`, `Disabled`, `PendingDeletion`, or `Unavailable` (store disconnected).
    pub state: &'static str,
    pub origin: &'static str,
    pub current_version: u32,
    pub versions: Vec<VersionView>,
    pub created: String,
    pub deletion_date: Option<String>,
    pub rotation_days: Option<u32>,
}

#[derive(Serialize)]
pub struct VersionView {
    pub version: u32,
    pub created: String,
}

pub fn state_name(state: KeyState, connected: bool) -> &'static str {
    match (connected, state) {
        (false, _) => "Unavailable",
        (true, KeyState::Enabled) => "Enabled",
        (true, KeyState::Disabled) => "Disabled",
        (true, KeyState::PendingDeletion) => "PendingDeletion",
    }
}

pub fn view(c: &Cmk, keystore_id: &str, connected: bool) -> KeyView {
    let mut versions: Vec<VersionView> = c
        .versions
        .iter()
        .map(|v| VersionView {
            version: v.version,
            created: rfc3339(v.created),
        })
        .collect();
    versions.sort_by_key(|v| v.version);
    KeyView {
        id: c.id.to_string(),
        arn: c.arn(keystore_id),
        aliases: c.aliases.clone(),
        description: c.description.clone(),
        spec: c.spec.clone(),
        usage: c.usage.clone(),
        state: state_name(c.state, connected),
        origin: "CLUSTER",
        current_version: c.latest().map(|v| v.version).unwrap_or(0),
        versions,
        created: rfc3339(c.created),
        deletion_date: c.deletion_date.map(rfc3339),
        rotation_days: c.rotation_days,
    }
}

/// Bad usage: print the message as clap does and exit with status 2.
pub fn usage_error(msg: impl std::fmt::Display) -> ! {
    clap::Error::raw(clap::error::ErrorKind::InvalidValue, format!("{msg}\n")).exit()
}

/// A library error as the user should read it, with what to do about it.
pub fn explain(e: &Error) -> String {
    let hint = match e.rv {
        CKR_TOKEN_NOT_PRESENT => Some("run `cks keystore connect` to reconnect it"),
        CKR_TOKEN_NOT_RECOGNIZED | CKR_USER_PIN_NOT_INITIALIZED => {
            Some("the key store is not set up: run `cks init`")
        }
        CKR_PIN_INCORRECT => Some("check the PIN (--pin or $CKS_PIN)"),
        CKR_PIN_LOCKED => Some("the user PIN is locked: the SO must set a new one"),
        CKR_DEVICE_ERROR => Some("check the HSM instances with `cks hsm list`"),
        _ => None,
    };
    match hint {
        Some(h) => format!("{e}; {h}"),
        None => e.to_string(),
    }
}

pub fn open() -> Result<(Config, KeyStore), String> {
    let cfg = Config::load().map_err(|e| e.to_string())?;
    let ks = KeyStore::open(&cfg).map_err(|e| explain(&e))?;
    due(&ks);
    Ok((cfg, ks))
}

/// Carry out the deletions that are due (and tell the user on stderr).
pub fn due(ks: &KeyStore) {
    for p in ks.run_due() {
        eprintln!(
            "cks: key {} was deleted: its scheduled deletion was due{}",
            p.key_id,
            if p.complete {
                ""
            } else {
                " (some instances were unreachable; they are purged when they return)"
            }
        );
    }
}

/// The key id of a key named by id, ARN, `alias/NAME` or `NAME`.
fn key_id(ks: &KeyStore, name: &str) -> Result<String, String> {
    match ks.resolve(name) {
        Ok(c) => Ok(c.id.to_string()),
        Err(e) => {
            if !name.starts_with("alias/") && !name.contains(':') {
                if let Ok(c) = ks.resolve(&format!("alias/{name}")) {
                    return Ok(c.id.to_string());
                }
            }
            Err(format!("{}; see `cks key list`", e.msg))
        }
    }
}

/// `NAME` → `alias/NAME`, then the KMS alias rules (bad usage if broken).
fn normalise_alias(a: &str) -> String {
    let a = if a.starts_with("alias/") {
        a.to_string()
    } else {
        format!("alias/{a}")
    };
    if let Err(e) = check_alias(&a) {
        usage_error(e.msg);
    }
    a
}

fn print_json<T: Serialize>(v: &T) -> Result<(), String> {
    println!(
        "{}",
        serde_json::to_string_pretty(v).map_err(|e| e.to_string())?
    );
    Ok(())
}

/// Output piped into `head` and the like ends the process quietly, as for other
/// command-line tools, rather than with a panic on a closed stdout.
pub fn default_sigpipe() {
    // SAFETY: restoring the default disposition of a signal has no preconditions.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
}

pub fn run(cmd: &KeyCommand) -> Result<(), String> {
    default_sigpipe();
    match cmd {
        KeyCommand::Create {
            spec,
            alias,
            usage,
            description,
            pin,
            json,
        } => create(
            *spec,
            alias.as_deref(),
            *usage,
            description,
            pin.as_deref(),
            *json,
        ),
        KeyCommand::List { json } => list(*json),
        KeyCommand::Describe { key, json } => {
            let (_, ks) = open()?;
            let id = key_id(&ks, key)?;
            let c = ks.resolve(&id).map_err(|e| explain(&e))?;
            show(&ks, &c, *json)
        }
        KeyCommand::Enable { key } => change(key, "enabled", |ks, id| ks.enable(id)),
        KeyCommand::Disable { key } => change(key, "disabled", |ks, id| ks.disable(id)),
        KeyCommand::Rotate { key, pin, json } => rotate(key, pin.as_deref(), *json),
        KeyCommand::Rotation { key, days, off } => {
            let days = if *off { None } else { *days };
            change(key, "updated", |ks, id| ks.set_rotation(id, days))
        }
        KeyCommand::Alias { key, alias } => set_alias(key, alias),
        KeyCommand::Unalias { alias } => {
            let alias = normalise_alias(alias);
            let (_, ks) = open()?;
            let c = ks
                .remove_alias(&alias)
                .map_err(|e| format!("{}; `cks key list` shows the aliases in use", explain(&e)))?;
            println!("{alias} removed from key {}", c.id);
            Ok(())
        }
        KeyCommand::ScheduleDeletion { key, days } => schedule(key, *days),
        KeyCommand::CancelDeletion { key } => change(
            key,
            "deletion cancelled; it is now Disabled (run `cks key enable` to use it)",
            |ks, id| ks.cancel_deletion(id),
        ),
        KeyCommand::Purge {
            key,
            yes,
            pin,
            json,
        } => purge(key, *yes, pin.as_deref(), *json),
    }
}

fn change(
    key: &str,
    what: &str,
    f: impl FnOnce(&KeyStore, &str) -> cks_pkcs11::error::Result<Cmk>,
) -> Result<(), String> {
    let (_, ks) = open()?;
    let id = key_id(&ks, key)?;
    let c = f(&ks, &id).map_err(|e| explain(&e))?;
    let state = state_name(c.state, ks.is_connected());
    let rotation = match c.rotation_days {
        Some(d) => format!(", rotates every {d} days"),
        None => String::new(),
    };
    println!("key {} {what} (state {state}{rotation})", c.id);
    Ok(())
}

fn list(json: bool) -> Result<(), String> {
    let (_, ks) = open()?;
    let mut keys: Vec<Cmk> = ks
        .with_cmks(|r| r.cmks().cloned().collect())
        .map_err(|e| explain(&e))?;
    keys.sort_by(|a, b| a.created.cmp(&b.created).then(a.id.cmp(&b.id)));
    let store = ks.keystore_id();
    let connected = ks.is_connected();
    let views: Vec<KeyView> = keys.iter().map(|c| view(c, &store, connected)).collect();
    if json {
        return print_json(&views);
    }
    if views.is_empty() {
        println!("no keys (create one with `cks key create --spec AES_256 --alias alias/NAME`)");
        return Ok(());
    }
    println!(
        "{:<36}  {:<15}  {:<13}  {:<19}  {:>3}  {:<20}  ALIASES",
        "KEY ID", "STATE", "SPEC", "USAGE", "VER", "CREATED"
    );
    for v in &views {
        println!(
            "{:<36}  {:<15}  {:<13}  {:<19}  {:>3}  {:<20}  {}",
            v.id,
            v.state,
            v.spec,
            v.usage,
            v.current_version,
            v.created,
            v.aliases.join(",")
        );
    }
    if !connected {
        println!(
            "(the key store is disconnected: keys are Unavailable until `cks keystore connect`)"
        );
    }
    Ok(())
}

fn show(ks: &KeyStore, c: &Cmk, json: bool) -> Result<(), String> {
    let v = view(c, &ks.keystore_id(), ks.is_connected());
    if json {
        return print_json(&v);
    }
    let none = || "-".to_string();
    println!("Key id:          {}", v.id);
    println!("ARN:             {}", v.arn);
    println!(
        "Aliases:         {}",
        if v.aliases.is_empty() {
            none()
        } else {
            v.aliases.join(", ")
        }
    );
    println!(
        "Description:     {}",
        if v.description.is_empty() {
            none()
        } else {
            v.description.clone()
        }
    );
    println!("Spec:            {}", v.spec);
    println!("Usage:           {}", v.usage);
    println!("State:           {}", v.state);
    println!("Origin:          {}", v.origin);
    println!("Created:         {}", v.created);
    println!(
        "Deletion date:   {}",
        v.deletion_date.clone().unwrap_or_else(none)
    );
    println!(
        "Rotation:        {}",
        v.rotation_days
            .map(|d| format!("every {d} days"))
            .unwrap_or_else(|| "by hand".into())
    );
    println!("Current version: {}", v.current_version);
    for ver in &v.versions {
        println!("  version {:<4} created {}", ver.version, ver.created);
    }
    Ok(())
}

// ---- create -----------------------------------------------------------------------------

fn create(
    spec: Spec,
    alias: Option<&str>,
    usage: Option<Usage>,
    description: &str,
    pin: Option<&str>,
    json: bool,
) -> Result<(), String> {
    let usage = usage.unwrap_or(spec.usages()[0]);
    if !spec.usages().contains(&usage) {
        let allowed: Vec<&str> = spec.usages().iter().map(|u| u.name()).collect();
        usage_error(format!(
            "a {} key cannot be {}; allowed: {}",
            spec.name(),
            usage.name(),
            allowed.join(", ")
        ));
    }
    let alias = alias.map(normalise_alias);
    let cfg = Config::load().map_err(|e| e.to_string())?;
    let token = Token::open(&cfg).map_err(|e| explain(&e))?;
    let ks = token.keystore().clone();
    due(&ks);
    if let Some(a) = &alias {
        if let Ok(owner) = ks.resolve(a) {
            return Err(format!(
                "{a} already names key {}; choose another alias, or create the key without \
                 --alias and move the alias with `cks key alias NEW-KEY {a}`",
                owner.id
            ));
        }
    }
    let pin = crate::pin::get(pin, "CKS_PIN", "User PIN: ")?;
    let h = token
        .open_session(CKF_SERIAL_SESSION | CKF_RW_SESSION)
        .map_err(|e| explain(&e))?;
    let result = generate(&token, h, spec, usage, alias.as_deref(), pin.as_bytes());
    token.close_all_sessions();
    let id = result.map_err(|e| explain(&e))?;
    let mut cmk = ks.resolve(&id).map_err(|e| explain(&e))?;
    if let Some(a) = &alias {
        if !cmk.aliases.contains(a) {
            // Another process took the alias in the meantime: undo rather than leave an
            // unnamed key behind.
            let undone = ks
                .login(PinUser::User, pin.as_bytes())
                .and_then(|_| ks.purge(&id));
            ks.logout(&[]);
            return Err(format!(
                "{a} was taken by another key while this one was created; the new key {id} {}",
                match undone {
                    Ok(_) => "was removed again".to_string(),
                    Err(e) => format!("has no alias ({})", explain(&e)),
                }
            ));
        }
    }
    if !description.is_empty() {
        cmk = ks
            .set_description(&id, description)
            .map_err(|e| explain(&e))?;
    }
    if json {
        return print_json(&view(&cmk, &ks.keystore_id(), ks.is_connected()));
    }
    println!(
        "created key {} ({} {}){}",
        cmk.id,
        cmk.spec,
        cmk.usage,
        cmk.primary_alias()
            .map(|a| format!(" as {a}"))
            .unwrap_or_default()
    );
    Ok(())
}

/// Log in, generate the key as an application would (C_GenerateKey / C_GenerateKeyPair
/// with a token-key template), and return its key id.
fn generate(
    token: &Token,
    h: CK_SESSION_HANDLE,
    spec: Spec,
    usage: Usage,
    alias: Option<&str>,
    pin: &[u8],
) -> cks_pkcs11::error::Result<String> {
    token.login(h, CKU_USER, pin)?;
    let b = |t: CK_ATTRIBUTE_TYPE, v: bool| (t, bool_bytes(v));
    let u = |t: CK_ATTRIBUTE_TYPE, v: CK_ULONG| (t, ulong_bytes(v));
    let mut common: Template = vec![b(CKA_TOKEN, true)];
    if let Some(a) = alias {
        common.push((CKA_LABEL, a.as_bytes().to_vec()));
    }
    let secret_parts = |mut t: Template| {
        t.extend([
            b(CKA_PRIVATE, true),
            b(CKA_SENSITIVE, true),
            b(CKA_EXTRACTABLE, false),
        ]);
        t
    };
    let handle = match spec {
        Spec::Aes256 | Spec::Hmac256 => {
            let (kt, mech) = if spec == Spec::Aes256 {
                (CKK_AES, Mechanism::AesKeyGen)
            } else {
                (CKK_GENERIC_SECRET, Mechanism::GenericSecretKeyGen)
            };
            let enc = usage == Usage::EncryptDecrypt;
            let wrap = usage == Usage::WrapUnwrap;
            let mac = usage == Usage::GenerateVerifyMac;
            let mut t = secret_parts(common);
            t.extend([
                u(CKA_CLASS, CKO_SECRET_KEY),
                u(CKA_KEY_TYPE, kt),
                u(CKA_VALUE_LEN, 32),
                b(CKA_ENCRYPT, enc),
                b(CKA_DECRYPT, enc),
                b(CKA_WRAP, wrap),
                b(CKA_UNWRAP, wrap),
                b(CKA_SIGN, mac),
                b(CKA_VERIFY, mac),
                b(CKA_DERIVE, false),
            ]);
            token.generate_key(h, &mech, &t)?
        }
        _ => {
            let sign = usage == Usage::SignVerify;
            let enc = usage == Usage::EncryptDecrypt;
            let (kt, mech, param) = match spec {
                Spec::EccNistP256 => (
                    CKK_EC,
                    Mechanism::EcKeyPairGen,
                    (
                        CKA_EC_PARAMS,
                        vec![0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07],
                    ),
                ),
                Spec::EccNistP384 => (
                    CKK_EC,
                    Mechanism::EcKeyPairGen,
                    (
                        CKA_EC_PARAMS,
                        vec![0x06, 0x05, 0x2b, 0x81, 0x04, 0x00, 0x22],
                    ),
                ),
                Spec::Rsa2048 => (CKK_RSA, Mechanism::RsaKeyPairGen, u(CKA_MODULUS_BITS, 2048)),
                Spec::Rsa3072 => (CKK_RSA, Mechanism::RsaKeyPairGen, u(CKA_MODULUS_BITS, 3072)),
                _ => (CKK_RSA, Mechanism::RsaKeyPairGen, u(CKA_MODULUS_BITS, 4096)),
            };
            let mut public = common.clone();
            public.extend([
                u(CKA_CLASS, CKO_PUBLIC_KEY),
                u(CKA_KEY_TYPE, kt),
                b(CKA_PRIVATE, false),
                b(CKA_VERIFY, sign),
                b(CKA_ENCRYPT, enc),
                b(CKA_WRAP, false),
                param,
            ]);
            let mut private = secret_parts(common);
            private.extend([
                u(CKA_CLASS, CKO_PRIVATE_KEY),
                u(CKA_KEY_TYPE, kt),
                b(CKA_SIGN, sign),
                b(CKA_DECRYPT, enc),
                b(CKA_UNWRAP, false),
                b(CKA_DERIVE, false),
            ]);
            token.generate_key_pair(h, &mech, &public, &private)?.1
        }
    };
    match token.get_attributes(h, handle, &[CKA_CKS_KEY_ID])?.pop() {
        Some(AttrValue::Value(v)) if !v.is_empty() => Ok(String::from_utf8_lossy(&v).to_string()),
        _ => Err(Error::general("the new key has no key id")),
    }
}

// ---- rotate, alias, deletion, purge -------------------------------------------------------

fn login(ks: &KeyStore, pin: Option<&str>) -> Result<(), String> {
    if !ks.is_connected() {
        return Err("the key store is disconnected: run `cks keystore connect` first".into());
    }
    let pin = crate::pin::get(pin, "CKS_PIN", "User PIN: ")?;
    ks.login(PinUser::User, pin.as_bytes())
        .map_err(|e| explain(&e))
}

fn rotate(key: &str, pin: Option<&str>, json: bool) -> Result<(), String> {
    let (_, ks) = open()?;
    let id = key_id(&ks, key)?;
    login(&ks, pin)?;
    let r = ks.rotate(&id);
    ks.logout(&[]);
    let c = r.map_err(|e| explain(&e))?;
    if json {
        return print_json(&view(&c, &ks.keystore_id(), ks.is_connected()));
    }
    println!(
        "key {} rotated: version {} is current; older versions still decrypt and verify",
        c.id,
        c.latest().map(|v| v.version).unwrap_or(0)
    );
    Ok(())
}

fn set_alias(key: &str, alias: &str) -> Result<(), String> {
    let alias = normalise_alias(alias);
    let (_, ks) = open()?;
    let id = key_id(&ks, key)?;
    let before = ks.resolve(&alias).ok().map(|c| c.id.to_string());
    let c = ks.set_alias(&id, &alias).map_err(|e| explain(&e))?;
    match before {
        Some(old) if old != id => println!("{alias} moved from key {old} to key {}", c.id),
        Some(_) => println!("{alias} already names key {}", c.id),
        None => println!("{alias} now names key {}", c.id),
    }
    Ok(())
}

fn schedule(key: &str, days: Option<f64>) -> Result<(), String> {
    let (cfg, ks) = open()?;
    let min = cfg.keystore.min_pending_days;
    if let Some(d) = days {
        if !(min..=30.0).contains(&d) {
            usage_error(format!(
                "--days {d}: the waiting period must be {min} to 30 days (keystore.min_pending_days)"
            ));
        }
    }
    let id = key_id(&ks, key)?;
    let c = ks.schedule_deletion(&id, days).map_err(|e| explain(&e))?;
    println!(
        "key {} is PendingDeletion: it will be deleted on {} unless `cks key cancel-deletion {}` runs first",
        c.id,
        c.deletion_date.map(rfc3339).unwrap_or_default(),
        c.id
    );
    Ok(())
}

fn purge(key: &str, yes: bool, pin: Option<&str>, json: bool) -> Result<(), String> {
    if !yes {
        usage_error(format!(
            "purge destroys {key} in every HSM instance at once, and everything encrypted \
             under it becomes unreadable: add --yes to confirm (or use \
             `cks key schedule-deletion`, which can be cancelled)"
        ));
    }
    let (_, ks) = open()?;
    let id = key_id(&ks, key)?;
    login(&ks, pin)?;
    let r = ks.purge(&id);
    ks.logout(&[]);
    let proof: PurgeProof = r.map_err(|e| explain(&e))?;
    if json {
        print_json(&proof)?;
    } else {
        println!(
            "key {} purged ({} objects); each instance asked afterwards:",
            proof.key_id,
            proof.objects.len()
        );
        println!(
            "  {:<12} {:>9}  {:<8}  {:<20}  RESULT",
            "INSTANCE", "REMAINING", "METADATA", "CHECKED AT"
        );
        for i in &proof.instances {
            println!(
                "  {:<12} {:>9}  {:<8}  {:<20}  {}",
                i.instance,
                i.remaining,
                if i.metadata_remaining {
                    "present"
                } else {
                    "gone"
                },
                i.checked_at,
                i.error.as_deref().unwrap_or("ok")
            );
        }
        println!("complete: {}", if proof.complete { "yes" } else { "NO" });
    }
    if !proof.complete {
        return Err(
            "the purge is not complete on every instance: an unreachable instance is purged \
             when it returns (`cks hsm sync`); check `cks hsm list`"
                .into(),
        );
    }
    Ok(())
}
