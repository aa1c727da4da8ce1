//! `cks demo`: the main job on the embedded default in one command, driven
//! through the module's C ABI exactly as an application would.

use std::fs;
use std::path::{Path, PathBuf};
use std::time::Instant;

use cryptoki::context::{CInitializeArgs, CInitializeFlags, Pkcs11};
use cryptoki::error::RvError;
use cryptoki::mechanism::aead::GcmParams;
use cryptoki::mechanism::Mechanism;
use cryptoki::object::{
    Attribute, AttributeInfo, AttributeType, KeyType, ObjectClass, ObjectHandle,
};
use cryptoki::session::{Session, UserType};
use cryptoki::slot::Slot;
use cryptoki::types::AuthPin;

use crate::bench::p11::{describe, is_rv};

const SO_PIN: &str = "demo-so-pin";
const USER_PIN: &str = "demo-user-pin";
const TOKEN_LABEL: &str = "cks-demo";
const AES_LABEL: &str = "alias/demo-aes";
/// DER OID of prime256v1.
const P256_PARAMS: [u8; 10] = [0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07];

#[derive(clap::Args, Debug, Clone)]
pub struct DemoArgs {
    /// PKCS#11 module (default: libcks_pkcs11.so beside the cks executable,
    /// else ./target/release/libcks_pkcs11.so)
    #[arg(long)]
    pub module: Option<PathBuf>,
}

fn default_module() -> PathBuf {
    if let Ok(exe) = std::env::current_exe() {
        if let Some(dir) = exe.parent() {
            let candidate = dir.join("libcks_pkcs11.so");
            if candidate.exists() {
                return candidate;
            }
        }
    }
    PathBuf::from("./target/release/libcks_pkcs11.so")
}

/// TOML basic string.
fn toml_str(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if c.is_control() => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// Makes a fresh private directory with a cks.toml for the embedded HSM.
fn make_config() -> Result<(PathBuf, PathBuf), String> {
    use std::os::unix::fs::DirBuilderExt;
    let dir = std::env::temp_dir().join(format!(
        "cks-demo-{}-{:08x}",
        std::process::id(),
        rand::random::<u32>()
    ));
    fs::DirBuilder::new()
        .mode(0o700)
        .create(&dir)
        .map_err(|e| format!("creating {}: {e}", dir.display()))?;
    let data_dir = dir.join("data");
    let config = format!(
        "[keystore]\nlabel = {}\ndata_dir = {}\n[kdf]\nmemory_kib = 8192\niterations = 1\n\
         [[hsm]]\nid = \"hsm1\"\nkind = \"embedded\"\n\
         [[hsm]]\nid = \"hsm2\"\nkind = \"embedded\"\n",
        toml_str(TOKEN_LABEL),
        toml_str(&data_dir.to_string_lossy())
    );
    let file = dir.join("cks.toml");
    if let Err(e) = fs::write(&file, config) {
        let _ = fs::remove_dir_all(&dir);
        return Err(format!("writing {}: {e}", file.display()));
    }
    Ok((dir, file))
}

/// Prints one line per step with ✓/✗ and its time, counting failures.
struct Steps {
    passed: usize,
    failed: usize,
}

impl Steps {
    fn step<T>(
        &mut self,
        name: &str,
        f: impl FnOnce() -> Result<(T, String), String>,
    ) -> Option<T> {
        let t0 = Instant::now();
        let result = f();
        let ms = t0.elapsed().as_secs_f64() * 1000.0;
        let (mark, detail, value) = match result {
            Ok((v, detail)) => {
                self.passed += 1;
                ("✓", detail, Some(v))
            }
            Err(e) => {
                self.failed += 1;
                ("✗", e, None)
            }
        };
        let mut lines = detail.lines();
        let first = lines.next().unwrap_or("");
        println!("{mark} {name:<44} {ms:>9.1} ms  {first}");
        for line in lines {
            println!("      {line}");
        }
        value
    }
}

fn d(e: cryptoki::error::Error) -> String {
    describe(&e)
}

fn token_label(ctx: &Pkcs11, slot: Slot) -> Result<String, String> {
    Ok(ctx
        .get_token_info(slot)
        .map_err(d)?
        .label()
        .trim()
        .to_string())
}

/// Lists every slot with its token and picks one: a token labelled
/// "cks-demo", else the first uninitialized token, else the first token.
fn list_slots(ctx: &Pkcs11) -> Result<((Slot, bool), String), String> {
    let mut text = Vec::new();
    let mut by_label = None;
    let mut blank = None;
    let mut first = None;
    for slot in ctx.get_all_slots().map_err(d)? {
        let info = ctx.get_slot_info(slot).map_err(d)?;
        let mut line = format!("slot {}: {}", slot.id(), info.slot_description().trim());
        if info.token_present() {
            let t = ctx.get_token_info(slot).map_err(d)?;
            let init = t.token_initialized();
            let serial = t.serial_number().trim();
            line.push_str(&format!(
                "; token {:?} ({} {}{}{}{})",
                t.label().trim(),
                t.manufacturer_id().trim(),
                t.model().trim(),
                if serial.is_empty() {
                    String::new()
                } else {
                    format!(", serial {serial}")
                },
                if init { "" } else { ", not initialized" },
                if t.user_pin_initialized() {
                    ", user PIN set"
                } else {
                    ""
                },
            ));
            if init && t.label().trim() == TOKEN_LABEL && by_label.is_none() {
                by_label = Some((slot, true));
            }
            if !init && blank.is_none() {
                blank = Some((slot, false));
            }
            if first.is_none() {
                first = Some((slot, init));
            }
        } else {
            line.push_str("; no token");
        }
        text.push(line);
    }
    let chosen = by_label
        .or(blank)
        .or(first)
        .ok_or_else(|| "no slot has a token".to_string())?;
    text.insert(
        0,
        format!("{} slot(s); using slot {}", text.len(), chosen.0.id()),
    );
    Ok((chosen, text.join("\n")))
}

fn find_labelled_slot(ctx: &Pkcs11) -> Result<Slot, String> {
    for slot in ctx.get_slots_with_token().map_err(d)? {
        if token_label(ctx, slot)? == TOKEN_LABEL {
            return Ok(slot);
        }
    }
    Err(format!(
        "no token labelled {TOKEN_LABEL:?} after C_InitToken"
    ))
}

fn aes_gcm_round_trip(session: &Session, key: ObjectHandle) -> Result<((), String), String> {
    let plaintext = b"attack at dawn, says the cks demo";
    let aad = b"cks-demo";
    let mut iv = [0u8; 12];
    session.generate_random_slice(&mut iv).map_err(d)?;
    let params = GcmParams::new(&mut iv, aad, 128u64.into()).map_err(d)?;
    let ciphertext = session
        .encrypt(&Mechanism::AesGcm(params), key, plaintext)
        .map_err(d)?;
    let params = GcmParams::new(&mut iv, aad, 128u64.into()).map_err(d)?;
    let decrypted = session
        .decrypt(&Mechanism::AesGcm(params), key, &ciphertext)
        .map_err(d)?;
    if decrypted != plaintext {
        return Err("decrypted text differs from the plaintext".to_string());
    }
    Ok((
        (),
        format!(
            "{} B → {} B ciphertext+tag → {} B",
            plaintext.len(),
            ciphertext.len(),
            decrypted.len()
        ),
    ))
}

fn sign_verify(
    session: &Session,
    mech: &Mechanism,
    private: ObjectHandle,
    public: ObjectHandle,
) -> Result<((), String), String> {
    let msg = b"cks demo message";
    let sig = session.sign(mech, private, msg).map_err(d)?;
    session.verify(mech, public, msg, &sig).map_err(d)?;
    match session.verify(mech, public, b"cks demo messagE", &sig) {
        Err(e) if is_rv(&e, RvError::SignatureInvalid) => {}
        Err(e) => return Err(format!("tampered message: {}", d(e))),
        Ok(()) => return Err("a tampered message verified".to_string()),
    }
    Ok((
        (),
        format!(
            "{} B signature verified; tampered message → CKR_SIGNATURE_INVALID",
            sig.len()
        ),
    ))
}

fn value_refused(session: &Session, key: ObjectHandle) -> Result<((), String), String> {
    let info = session
        .get_attribute_info(key, &[AttributeType::Value])
        .map_err(d)?;
    match info.first() {
        Some(AttributeInfo::Sensitive) => {}
        Some(other) => return Err(format!("CKA_VALUE was not refused ({other:?})")),
        None => return Err("no answer for CKA_VALUE".to_string()),
    }
    // And the value itself does not come back.
    let got = session
        .get_attributes(key, &[AttributeType::Value])
        .map_err(d)?;
    if got.iter().any(|a| matches!(a, Attribute::Value(_))) {
        return Err("CKA_VALUE was returned".to_string());
    }
    Ok((
        (),
        "key material refused (CKR_ATTRIBUTE_SENSITIVE)".to_string(),
    ))
}

fn session_steps(s: &mut Steps, ctx: &Pkcs11, slot: Slot, user_pin_set: bool) {
    let Some(session) = s.step("C_OpenSession (RW)", || {
        let session = ctx.open_rw_session(slot).map_err(d)?;
        Ok((session, String::new()))
    }) else {
        return;
    };

    if user_pin_set {
        println!("- SO login + C_InitPIN + logout: the user PIN is already set, skipped");
    } else {
        let ok = s.step("SO login + C_InitPIN + logout", || {
            let so = AuthPin::from(SO_PIN.to_string());
            session.login(UserType::So, Some(&so)).map_err(d)?;
            let result = session.init_pin(&AuthPin::from(USER_PIN.to_string()));
            let logout = session.logout();
            result.map_err(d)?;
            logout.map_err(d)?;
            Ok(((), String::new()))
        });
        if ok.is_none() {
            return;
        }
    }

    let user = AuthPin::from(USER_PIN.to_string());
    let logged_in = s.step("user login", || {
        session.login(UserType::User, Some(&user)).map_err(d)?;
        Ok(((), String::new()))
    });
    if logged_in.is_none() {
        return;
    }

    let aes = s.step("C_GenerateKey AES-256 \"alias/demo-aes\"", || {
        let template = [
            Attribute::Class(ObjectClass::SECRET_KEY),
            Attribute::KeyType(KeyType::AES),
            Attribute::ValueLen(32u64.into()),
            Attribute::Token(true),
            Attribute::Private(true),
            Attribute::Sensitive(true),
            Attribute::Extractable(false),
            Attribute::Encrypt(true),
            Attribute::Decrypt(true),
            Attribute::Label(AES_LABEL.as_bytes().to_vec()),
        ];
        let key = session
            .generate_key(&Mechanism::AesKeyGen, &template)
            .map_err(d)?;
        Ok((key, format!("handle {key}")))
    });
    if let Some(key) = aes {
        s.step("AES-GCM encrypt + decrypt", || {
            aes_gcm_round_trip(&session, key)
        });
    }

    let ec = s.step("C_GenerateKeyPair EC P-256 \"demo-ec\"", || {
        let label = b"demo-ec".to_vec();
        let public = [
            Attribute::Token(true),
            Attribute::Verify(true),
            Attribute::EcParams(P256_PARAMS.to_vec()),
            Attribute::Label(label.clone()),
        ];
        let private = [
            Attribute::Token(true),
            Attribute::Private(true),
            Attribute::Sensitive(true),
            Attribute::Extractable(false),
            Attribute::Sign(true),
            Attribute::Label(label),
        ];
        let pair = session
            .generate_key_pair(&Mechanism::EccKeyPairGen, &public, &private)
            .map_err(d)?;
        Ok((pair, String::new()))
    });
    if let Some((public, private)) = ec {
        s.step("ECDSA-SHA256 sign + verify", || {
            sign_verify(&session, &Mechanism::EcdsaSha256, private, public)
        });
    }

    let rsa = s.step("C_GenerateKeyPair RSA-2048 \"demo-rsa\"", || {
        let label = b"demo-rsa".to_vec();
        let public = [
            Attribute::Token(true),
            Attribute::Verify(true),
            Attribute::ModulusBits(2048u64.into()),
            Attribute::PublicExponent(vec![0x01, 0x00, 0x01]),
            Attribute::Label(label.clone()),
        ];
        let private = [
            Attribute::Token(true),
            Attribute::Private(true),
            Attribute::Sensitive(true),
            Attribute::Extractable(false),
            Attribute::Sign(true),
            Attribute::Label(label),
        ];
        let pair = session
            .generate_key_pair(&Mechanism::RsaPkcsKeyPairGen, &public, &private)
            .map_err(d)?;
        Ok((pair, String::new()))
    });
    if let Some((public, private)) = rsa {
        s.step("SHA256-RSA-PKCS sign + verify", || {
            sign_verify(&session, &Mechanism::Sha256RsaPkcs, private, public)
        });
    }

    if let Some(key) = aes {
        s.step("read CKA_VALUE of the AES key", || {
            value_refused(&session, key)
        });
        s.step("find \"alias/demo-aes\" by label", || {
            let found = session
                .find_objects(&[
                    Attribute::Class(ObjectClass::SECRET_KEY),
                    Attribute::Label(AES_LABEL.as_bytes().to_vec()),
                ])
                .map_err(d)?;
            if !found.contains(&key) {
                return Err(format!("the key is not among the {} found", found.len()));
            }
            Ok((
                (),
                format!("{} object(s) found, including handle {key}", found.len()),
            ))
        });
    }

    s.step("C_Logout", || {
        session.logout().map_err(d)?;
        Ok(((), String::new()))
    });
    s.step("C_CloseSession", || {
        session.close().map_err(d)?;
        Ok(((), String::new()))
    });
}

fn demo(module: &Path, s: &mut Steps) {
    let Some(ctx) = s.step("load module + C_Initialize", || {
        let ctx = Pkcs11::new(module).map_err(|e| format!("loading: {e}"))?;
        ctx.initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK))
            .map_err(d)?;
        let detail = match ctx.get_library_info() {
            Ok(i) => format!(
                "{} {} {} (Cryptoki {})",
                i.manufacturer_id().trim(),
                i.library_description().trim(),
                i.library_version(),
                i.cryptoki_version()
            ),
            Err(e) => d(e),
        };
        Ok((ctx, detail))
    }) else {
        return;
    };

    if let Some((slot, initialized)) = s.step("list slots and tokens", || list_slots(&ctx)) {
        let slot = if initialized {
            Some(slot)
        } else {
            s.step("C_InitToken \"cks-demo\"", || {
                ctx.init_token(slot, &AuthPin::from(SO_PIN.to_string()), TOKEN_LABEL)
                    .map_err(d)?;
                // Some modules (SoftHSM2) give the token a new slot id.
                let slot = find_labelled_slot(&ctx)?;
                Ok((slot, format!("now slot {}", slot.id())))
            })
        };
        if let Some(slot) = slot {
            match ctx.get_token_info(slot) {
                Ok(t) => session_steps(s, &ctx, slot, t.user_pin_initialized()),
                Err(e) => {
                    s.step("C_GetTokenInfo", || -> Result<((), String), String> {
                        Err(d(e))
                    });
                }
            }
        }
    }

    s.step("C_Finalize", || {
        ctx.finalize().map_err(d)?;
        Ok(((), String::new()))
    });
}

pub fn run(args: &DemoArgs) -> Result<(), String> {
    let module = args.module.clone().unwrap_or_else(default_module);
    println!("cks demo: module {}", module.display());
    let temp = if std::env::var_os("CKS_CONFIG").is_some() {
        println!("cks demo: using CKS_CONFIG from the environment");
        None
    } else {
        let (dir, file) = make_config()?;
        std::env::set_var("CKS_CONFIG", &file);
        println!("cks demo: CKS_CONFIG={} (temporary)", file.display());
        Some(dir)
    };

    let mut steps = Steps {
        passed: 0,
        failed: 0,
    };
    demo(&module, &mut steps);

    if let Some(dir) = temp {
        std::env::remove_var("CKS_CONFIG");
        if let Err(e) = fs::remove_dir_all(&dir) {
            eprintln!("warning: removing {}: {e}", dir.display());
        }
    }
    if steps.failed > 0 {
        return Err(format!(
            "{} step(s) failed, {} passed",
            steps.failed, steps.passed
        ));
    }
    println!("cks demo: all {} steps passed", steps.passed);
    Ok(())
}
