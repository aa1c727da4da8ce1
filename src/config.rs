//! The TOML configuration (`$CKS_CONFIG`), validated with messages that name the file,
//! the line and what was expected. Without a file: the embedded default.

use serde::Deserialize;
use std::path::{Path, PathBuf};

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    #[serde(default)]
    pub keystore: KeystoreConfig,
    #[serde(default)]
    pub kdf: KdfConfig,
    #[serde(default)]
    pub log: LogConfig,
    #[serde(default)]
    pub audit: crate::audit::AuditConfig,
    #[serde(default, rename = "hsm")]
    pub hsms: Vec<HsmConfig>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeystoreConfig {
    #[serde(default = "default_label")]
    pub label: String,
    /// State directory of the key store; instances live below it unless given a path.
    pub data_dir: Option<PathBuf>,
    /// Wrong PINs in a row before the PIN is locked.
    #[serde(default = "default_max_pin_attempts")]
    pub max_pin_attempts: u32,
    /// Instances a new key must be durable on (default 2, or 1 in a one-instance cluster).
    pub min_replicas: Option<usize>,
    /// How calls are spread over healthy instances.
    #[serde(default)]
    pub balance: Balance,
    /// Shortest waiting period of a scheduled key deletion, in days (KMS: 7; tests
    /// may use a fraction).
    #[serde(default = "default_min_pending_days")]
    pub min_pending_days: f64,
    /// Waiting period when none is given (also for `C_DestroyObject` on a key).
    #[serde(default = "default_pending_days")]
    pub default_pending_days: f64,
}

fn default_min_pending_days() -> f64 {
    7.0
}
fn default_pending_days() -> f64 {
    30.0
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Balance {
    #[default]
    LeastOutstanding,
    RoundRobin,
}

impl Default for KeystoreConfig {
    fn default() -> Self {
        KeystoreConfig {
            label: default_label(),
            data_dir: None,
            max_pin_attempts: default_max_pin_attempts(),
            min_replicas: None,
            balance: Balance::default(),
            min_pending_days: default_min_pending_days(),
            default_pending_days: default_pending_days(),
        }
    }
}

/// Argon2id parameters for deriving the PIN key. The defaults follow OWASP's
/// recommendation; tests lower them.
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KdfConfig {
    #[serde(default = "default_memory_kib")]
    pub memory_kib: u32,
    #[serde(default = "default_iterations")]
    pub iterations: u32,
}

impl Default for KdfConfig {
    fn default() -> Self {
        KdfConfig {
            memory_kib: default_memory_kib(),
            iterations: default_iterations(),
        }
    }
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogConfig {
    /// tracing filter, e.g. "debug"; `CKS_LOG` overrides it.
    pub filter: Option<String>,
    /// Log file; default stderr.
    pub file: Option<PathBuf>,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum HsmKind {
    Embedded,
    /// Any PKCS#11 module: a vendor HSM's client library, SoftHSM2, p11-kit's client.
    Pkcs11,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HsmConfig {
    pub id: String,
    pub kind: HsmKind,
    /// Embedded instances: their directory (default `<data_dir>/hsm/<id>`).
    pub path: Option<PathBuf>,
    /// For tests: while this file exists the instance behaves as a failed device.
    pub fault_file: Option<PathBuf>,
    /// Most calls in flight on this instance from one process (protects a small HSM
    /// from being overloaded); callers beyond it go to another instance or wait.
    pub max_in_flight: Option<u64>,
    /// pkcs11 instances: the module (shared library) to load.
    pub module: Option<PathBuf>,
    /// pkcs11 instances: the token, by label or by serial number.
    pub token_label: Option<String>,
    pub token_serial: Option<String>,
    /// pkcs11 instances: where the token's user PIN is (never the PIN itself).
    pub pin_env: Option<String>,
    pub pin_file: Option<PathBuf>,
    /// pkcs11 instances: the token's SO PIN, needed only while the domain key is
    /// installed (`cks init`, or the first repair of a new member).
    pub so_pin_env: Option<String>,
    pub so_pin_file: Option<PathBuf>,
    /// pkcs11 instances whose module cannot unwrap under the domain key (p11-kit's
    /// remoting carries no AES key-wrap mechanism): take copies of keys as plaintext
    /// values over the module's channel instead. Off unless set.
    pub accept_plaintext_keys: Option<bool>,
}

impl HsmConfig {
    pub fn embedded(id: &str) -> HsmConfig {
        HsmConfig {
            id: id.into(),
            kind: HsmKind::Embedded,
            path: None,
            fault_file: None,
            max_in_flight: None,
            module: None,
            token_label: None,
            token_serial: None,
            pin_env: None,
            pin_file: None,
            so_pin_env: None,
            so_pin_file: None,
            accept_plaintext_keys: None,
        }
    }
}

fn default_label() -> String {
    "cks".into()
}
fn default_max_pin_attempts() -> u32 {
    10
}
fn default_memory_kib() -> u32 {
    19 * 1024
}
fn default_iterations() -> u32 {
    2
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read configuration {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("configuration {path}, line {line}: {msg}")]
    Parse {
        path: PathBuf,
        line: usize,
        msg: String,
    },
    #[error("configuration {path}: {msg}")]
    Invalid { path: PathBuf, msg: String },
}

impl Config {
    /// The configuration in force: `$CKS_CONFIG` if set; else `cks.toml` in the default
    /// data directory if `cks init` wrote one; else the embedded default.
    pub fn load() -> Result<Config, ConfigError> {
        Config::from_path(Config::path().as_deref())
    }

    /// Where the configuration comes from (`None`: the built-in default).
    pub fn path() -> Option<PathBuf> {
        match std::env::var_os("CKS_CONFIG") {
            Some(path) if !path.is_empty() => Some(PathBuf::from(path)),
            _ => Some(default_data_dir().join("cks.toml")).filter(|p| p.exists()),
        }
    }

    pub fn from_path(path: Option<&Path>) -> Result<Config, ConfigError> {
        match path {
            Some(p) => Config::from_file(p),
            None => Ok(Config::default_store()),
        }
    }

    pub fn from_file(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        Config::parse(&text, path)
    }

    pub fn parse(text: &str, path: &Path) -> Result<Config, ConfigError> {
        let mut cfg: Config = toml::from_str(text).map_err(|e| {
            let line = e
                .span()
                .map(|s| text[..s.start.min(text.len())].matches('\n').count() + 1)
                .unwrap_or(0);
            ConfigError::Parse {
                path: path.to_owned(),
                line,
                msg: e.message().to_string(),
            }
        })?;
        cfg.validate(path)?;
        Ok(cfg)
    }

    /// No file: one key store under the user's data directory with two embedded instances.
    pub fn default_store() -> Config {
        let mut cfg = Config {
            keystore: KeystoreConfig::default(),
            kdf: KdfConfig::default(),
            log: LogConfig::default(),
            audit: Default::default(),
            hsms: ["hsm1", "hsm2"]
                .iter()
                .map(|id| HsmConfig::embedded(id))
                .collect(),
        };
        cfg.keystore.data_dir = Some(default_data_dir());
        cfg
    }

    fn validate(&mut self, path: &Path) -> Result<(), ConfigError> {
        let invalid = |msg: String| ConfigError::Invalid {
            path: path.to_owned(),
            msg,
        };
        if self.hsms.is_empty() {
            return Err(invalid(
                "expected at least one [[hsm]] entry (e.g. id = \"hsm1\", kind = \"embedded\")"
                    .into(),
            ));
        }
        if self.hsms.len() > 64 {
            return Err(invalid("expected at most 64 [[hsm]] entries".into()));
        }
        let mut seen = std::collections::HashSet::new();
        for h in &self.hsms {
            if h.id.is_empty()
                || !h
                    .id
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
            {
                return Err(invalid(format!(
                    "hsm id {:?}: expected letters, digits, '-' or '_'",
                    h.id
                )));
            }
            if !seen.insert(h.id.clone()) {
                return Err(invalid(format!("hsm id {:?} appears twice", h.id)));
            }
            let pkcs11_only = [
                ("module", h.module.is_some()),
                ("token_label", h.token_label.is_some()),
                ("token_serial", h.token_serial.is_some()),
                ("pin_env", h.pin_env.is_some()),
                ("pin_file", h.pin_file.is_some()),
                ("so_pin_env", h.so_pin_env.is_some()),
                ("so_pin_file", h.so_pin_file.is_some()),
                ("accept_plaintext_keys", h.accept_plaintext_keys.is_some()),
            ];
            match h.kind {
                HsmKind::Embedded => {
                    if let Some((k, _)) = pkcs11_only.iter().find(|(_, set)| *set) {
                        return Err(invalid(format!(
                            "hsm {:?}: {k} is for kind = \"pkcs11\" instances",
                            h.id
                        )));
                    }
                }
                HsmKind::Pkcs11 => {
                    let need = |ok: bool, what: &str| {
                        if ok {
                            Ok(())
                        } else {
                            Err(invalid(format!(
                                "hsm {:?} (kind = \"pkcs11\"): {what}",
                                h.id
                            )))
                        }
                    };
                    need(
                        h.module.is_some(),
                        "expected module = \"/path/to/module.so\"",
                    )?;
                    need(
                        h.token_label.is_some() != h.token_serial.is_some(),
                        "expected one of token_label or token_serial",
                    )?;
                    need(
                        h.pin_env.is_some() != h.pin_file.is_some(),
                        "expected one of pin_env or pin_file (the token's user PIN; never the PIN itself)",
                    )?;
                    need(
                        !(h.so_pin_env.is_some() && h.so_pin_file.is_some()),
                        "expected at most one of so_pin_env or so_pin_file",
                    )?;
                    need(h.path.is_none(), "path is for embedded instances")?;
                }
            }
        }
        if self.keystore.label.is_empty() || self.keystore.label.len() > 32 {
            return Err(invalid("keystore.label: expected 1 to 32 bytes".into()));
        }
        if let Some(n) = self.keystore.min_replicas {
            if n == 0 || n > self.hsms.len() {
                return Err(invalid(format!(
                    "keystore.min_replicas: expected 1 to {} (the number of [[hsm]] entries)",
                    self.hsms.len()
                )));
            }
        }
        let (min, def) = (
            self.keystore.min_pending_days,
            self.keystore.default_pending_days,
        );
        if !(0.0..=30.0).contains(&min) || !(min..=30.0).contains(&def) {
            return Err(invalid(
                "keystore: expected 0 <= min_pending_days <= default_pending_days <= 30".into(),
            ));
        }
        if self.keystore.max_pin_attempts == 0 {
            return Err(invalid(
                "keystore.max_pin_attempts: expected at least 1".into(),
            ));
        }
        if self.kdf.memory_kib < 8 || self.kdf.iterations == 0 {
            return Err(invalid(
                "kdf: expected memory_kib >= 8 and iterations >= 1".into(),
            ));
        }
        if self.keystore.data_dir.is_none() {
            self.keystore.data_dir = Some(default_data_dir());
        }
        Ok(())
    }

    pub fn data_dir(&self) -> PathBuf {
        self.keystore
            .data_dir
            .clone()
            .unwrap_or_else(default_data_dir)
    }

    /// The audit log's directory (default `<data_dir>/audit`).
    pub fn audit_dir(&self) -> PathBuf {
        if self.audit.dir.as_os_str().is_empty() {
            self.data_dir().join("audit")
        } else {
            self.audit.dir.clone()
        }
    }

    pub fn hsm_dir(&self, hsm: &HsmConfig) -> PathBuf {
        hsm.path
            .clone()
            .unwrap_or_else(|| self.data_dir().join("hsm").join(&hsm.id))
    }
}

pub fn default_data_dir() -> PathBuf {
    if let Some(x) = std::env::var_os("XDG_DATA_HOME").filter(|x| !x.is_empty()) {
        return PathBuf::from(x).join("cks");
    }
    let home = std::env::var_os("HOME").unwrap_or_else(|| "/tmp".into());
    PathBuf::from(home).join(".local/share/cks")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_error_names_file_and_line() {
        let text = "[keystore]\nlabel = \"x\"\nmax_pin_attempts = \"ten\"\n";
        let err = Config::parse(text, Path::new("/etc/cks.toml")).unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("/etc/cks.toml"), "{msg}");
        assert!(msg.contains("line 3"), "{msg}");
    }

    #[test]
    fn unknown_key_is_refused() {
        let text = "[keystore]\nlabl = \"x\"\n[[hsm]]\nid=\"a\"\nkind=\"embedded\"\n";
        let err = Config::parse(text, Path::new("c.toml")).unwrap_err();
        assert!(err.to_string().contains("line 2"), "{err}");
    }

    #[test]
    fn needs_an_hsm() {
        let err = Config::parse("[keystore]\nlabel=\"x\"\n", Path::new("c.toml")).unwrap_err();
        assert!(err.to_string().contains("[[hsm]]"), "{err}");
    }

    #[test]
    fn minimal_file() {
        let cfg = Config::parse(
            "[keystore]\ndata_dir=\"/tmp/x\"\n[[hsm]]\nid=\"h1\"\nkind=\"embedded\"\n",
            Path::new("c.toml"),
        )
        .unwrap();
        assert_eq!(cfg.hsm_dir(&cfg.hsms[0]), PathBuf::from("/tmp/x/hsm/h1"));
        assert_eq!(cfg.keystore.max_pin_attempts, 10);
    }

    fn pkcs11(body: &str) -> Result<Config, ConfigError> {
        Config::parse(
            &format!(
                "[[hsm]]\nid=\"e\"\nkind=\"embedded\"\n[[hsm]]\nid=\"p\"\nkind=\"pkcs11\"\n{body}"
            ),
            Path::new("c.toml"),
        )
    }

    #[test]
    fn pkcs11_member_needs_module_token_and_pin_source() {
        let ok = "module=\"/m.so\"\ntoken_label=\"t\"\npin_env=\"P\"\n";
        let cfg = pkcs11(ok).unwrap();
        assert_eq!(cfg.hsms[1].kind, HsmKind::Pkcs11);
        for (body, want) in [
            ("token_label=\"t\"\npin_env=\"P\"\n", "module"),
            (
                "module=\"/m.so\"\npin_env=\"P\"\n",
                "token_label or token_serial",
            ),
            (
                "module=\"/m.so\"\ntoken_label=\"t\"\ntoken_serial=\"1\"\npin_env=\"P\"\n",
                "token_label or token_serial",
            ),
            (
                "module=\"/m.so\"\ntoken_label=\"t\"\n",
                "pin_env or pin_file",
            ),
            (
                "module=\"/m.so\"\ntoken_label=\"t\"\npin_env=\"P\"\npin_file=\"/f\"\n",
                "pin_env or pin_file",
            ),
            // The PIN itself has no place in the file.
            (
                "module=\"/m.so\"\ntoken_label=\"t\"\npin=\"1234\"\n",
                "unknown field",
            ),
        ] {
            let err = pkcs11(body).unwrap_err().to_string();
            assert!(err.contains(want), "{body}: {err}");
        }
    }

    #[test]
    fn pkcs11_keys_refused_on_embedded_members() {
        let err = Config::parse(
            "[[hsm]]\nid=\"e\"\nkind=\"embedded\"\nmodule=\"/m.so\"\n",
            Path::new("c.toml"),
        )
        .unwrap_err();
        assert!(err.to_string().contains("module is for kind"), "{err}");
    }
}
