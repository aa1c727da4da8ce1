//! SoftHSM2 tokens and `p11-kit server` for tests of `kind = "pkcs11"` instances.
//!
//! A test makes its own SoftHSM2 configuration (tokens in a temp dir, file object store)
//! and passes `SOFTHSM2_CONF` to every process that loads SoftHSM: `cks`, the child
//! processes that load the cks module, `pkcs11-tool`, `softhsm2-util`, `p11-kit server`.
//! The test process itself never loads SoftHSM (one process initialises a module once).
#![allow(dead_code)]

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// The backend tokens' PINs (not the cks token's).
pub const SOFT_SO_PIN: &str = "soft-so-4321";
pub const SOFT_PIN: &str = "soft-user-4321";

/// Where SoftHSM2's module may be.
const SOFTHSM_MODULES: [&str; 2] = [
    "/usr/lib/softhsm/libsofthsm2.so",
    "/usr/lib/x86_64-linux-gnu/softhsm/libsofthsm2.so",
];
/// Where p11-kit's client module may be.
const P11KIT_CLIENTS: [&str; 3] = [
    "/usr/lib/x86_64-linux-gnu/pkcs11/p11-kit-client.so",
    "/usr/lib64/pkcs11/p11-kit-client.so",
    "/usr/lib/pkcs11/p11-kit-client.so",
];

/// SoftHSM2's PKCS#11 module, if installed.
pub fn softhsm_module() -> Option<PathBuf> {
    SOFTHSM_MODULES
        .iter()
        .map(PathBuf::from)
        .find(|p| p.exists())
}

/// p11-kit's client module, if installed.
pub fn p11kit_client() -> Option<PathBuf> {
    P11KIT_CLIENTS
        .iter()
        .map(PathBuf::from)
        .find(|p| p.exists())
}

/// Is `program` on `PATH`?
pub fn on_path(program: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|paths| std::env::split_paths(&paths).any(|d| d.join(program).is_file()))
}

/// Are SoftHSM2, `softhsm2-util` and `pkcs11-tool` (and, with `p11kit`, `p11-kit` and its
/// client module) installed? If not: false after printing why the test is skipped — or,
/// with `CI=true`, a failure.
pub fn tools_present(test: &str, p11kit: bool) -> bool {
    let mut missing = Vec::new();
    if softhsm_module().is_none() {
        missing.push(format!("libsofthsm2.so (looked in {SOFTHSM_MODULES:?})"));
    }
    for tool in ["softhsm2-util", "pkcs11-tool"] {
        if !on_path(tool) {
            missing.push(tool.to_string());
        }
    }
    if p11kit {
        if !on_path("p11-kit") {
            missing.push("p11-kit".into());
        }
        if p11kit_client().is_none() {
            missing.push(format!("p11-kit-client.so (looked in {P11KIT_CLIENTS:?})"));
        }
    }
    if missing.is_empty() {
        return true;
    }
    let msg = format!("{test}: missing {}", missing.join(", "));
    if std::env::var("CI").is_ok_and(|v| v == "true") {
        panic!("{msg} (CI=true: required; install softhsm2, opensc and p11-kit)");
    }
    eprintln!("SKIPPED {msg} (install softhsm2, opensc and p11-kit to run it)");
    false
}

/// What a bounded subprocess did.
pub struct Out {
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

impl Out {
    pub fn ok(&self) -> bool {
        self.status.success()
    }
    pub fn text(&self) -> String {
        format!("{}{}", self.stdout, self.stderr)
    }
}

/// Run `cmd` (stdin closed, output in files under `dir`); kill it after `limit`.
pub fn bounded(mut cmd: Command, dir: &Path, limit: Duration) -> Out {
    let n = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    let out_path = dir.join(format!(".out-{n}-{}", rand::random::<u32>()));
    let err_path = out_path.with_extension("err");
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&out_path).expect("stdout file"))
        .stderr(std::fs::File::create(&err_path).expect("stderr file"))
        .spawn()
        .unwrap_or_else(|e| panic!("spawn {cmd:?}: {e}"));
    let start = Instant::now();
    let status = loop {
        if let Some(st) = child.try_wait().expect("wait") {
            break st;
        }
        if start.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            let err = std::fs::read_to_string(&err_path).unwrap_or_default();
            let out = std::fs::read_to_string(&out_path).unwrap_or_default();
            panic!("{cmd:?} did not finish within {limit:?}:\n{out}{err}");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let stdout = std::fs::read_to_string(&out_path).unwrap_or_default();
    let stderr = std::fs::read_to_string(&err_path).unwrap_or_default();
    let _ = std::fs::remove_file(out_path);
    let _ = std::fs::remove_file(err_path);
    Out {
        status,
        stdout,
        stderr,
    }
}

/// Longest a SoftHSM tool may run.
const TOOL_LIMIT: Duration = Duration::from_secs(60);

/// A SoftHSM2 configuration of its own: `<dir>/softhsm2.conf`, tokens in `<dir>/tokens`.
pub struct SoftHsm {
    pub dir: PathBuf,
    pub conf: PathBuf,
    pub module: PathBuf,
}

/// One object as `pkcs11-tool -O` prints it.
#[derive(Debug, Clone)]
pub struct ToolObject {
    /// The first line, e.g. "Secret Key Object; AES length 32".
    pub header: String,
    pub label: String,
    /// CKA_ID in hex (as printed).
    pub id: String,
    /// Every indented line, trimmed.
    pub lines: Vec<String>,
}

impl ToolObject {
    pub fn is_secret_key(&self) -> bool {
        self.header.starts_with("Secret Key Object")
    }
    pub fn is_private_key(&self) -> bool {
        self.header.starts_with("Private Key Object")
    }
    pub fn is_key(&self) -> bool {
        self.is_secret_key() || self.is_private_key()
    }
}

impl SoftHsm {
    /// A fresh SoftHSM2 configuration under `dir` (created).
    pub fn new(dir: &Path) -> SoftHsm {
        let module = softhsm_module().expect("SoftHSM2 installed (checked by tools_present)");
        let tokens = dir.join("tokens");
        std::fs::create_dir_all(&tokens).expect("SoftHSM token dir");
        let conf = dir.join("softhsm2.conf");
        std::fs::write(
            &conf,
            format!(
                "directories.tokendir = {}\nobjectstore.backend = file\nlog.level = ERROR\n",
                tokens.display()
            ),
        )
        .expect("write softhsm2.conf");
        SoftHsm {
            dir: dir.to_owned(),
            conf,
            module,
        }
    }

    /// `SOFTHSM2_CONF` for processes that load SoftHSM.
    pub fn env(&self) -> (&'static str, String) {
        ("SOFTHSM2_CONF", self.conf.display().to_string())
    }

    /// `softhsm2-util --init-token --free --label LABEL` with the backend PINs.
    pub fn init_token(&self, label: &str) {
        let mut cmd = Command::new("softhsm2-util");
        cmd.args([
            "--init-token",
            "--free",
            "--label",
            label,
            "--so-pin",
            SOFT_SO_PIN,
            "--pin",
            SOFT_PIN,
        ])
        .env("SOFTHSM2_CONF", &self.conf);
        let o = bounded(cmd, &self.dir, TOOL_LIMIT);
        assert!(o.ok(), "softhsm2-util --init-token {label}:\n{}", o.text());
    }

    /// `pkcs11-tool --module <softhsm> ARGS` with this configuration.
    pub fn tool(&self, args: &[&str]) -> Out {
        let mut cmd = Command::new("pkcs11-tool");
        cmd.arg("--module")
            .arg(&self.module)
            .args(args)
            .env("SOFTHSM2_CONF", &self.conf);
        bounded(cmd, &self.dir, TOOL_LIMIT)
    }

    /// The serial number of the token labelled `label` (`pkcs11-tool -L`).
    pub fn serial(&self, label: &str) -> String {
        let o = self.tool(&["-L"]);
        assert!(o.ok(), "pkcs11-tool -L:\n{}", o.text());
        let mut in_token = false;
        for line in o.stdout.lines() {
            let Some((k, v)) = line.split_once(':') else {
                continue;
            };
            match k.trim() {
                "token label" => in_token = v.trim() == label,
                "serial num" if in_token => return v.trim().to_string(),
                _ => {}
            }
        }
        panic!("no serial number for token {label} in:\n{}", o.stdout);
    }

    /// Every object of token `label` as the user sees it (`pkcs11-tool -O --login`).
    pub fn objects(&self, label: &str) -> Vec<ToolObject> {
        let o = self.tool(&["--token-label", label, "--login", "--pin", SOFT_PIN, "-O"]);
        assert!(o.ok(), "pkcs11-tool -O on {label}:\n{}", o.text());
        parse_objects(&o.stdout)
    }
}

/// Objects in `pkcs11-tool -O` output: a header line, then indented `key: value` lines.
pub fn parse_objects(text: &str) -> Vec<ToolObject> {
    let mut out: Vec<ToolObject> = Vec::new();
    for line in text.lines() {
        if line.trim().is_empty() {
            continue;
        }
        if !line.starts_with([' ', '\t']) {
            out.push(ToolObject {
                header: line.trim().to_string(),
                label: String::new(),
                id: String::new(),
                lines: Vec::new(),
            });
            continue;
        }
        let Some(obj) = out.last_mut() else { continue };
        let line = line.trim();
        if let Some((k, v)) = line.split_once(':') {
            let v = v.trim().trim_matches('\'').to_string();
            match k.trim() {
                "label" => obj.label = v,
                "ID" => obj.id = v,
                _ => {}
            }
        }
        obj.lines.push(line.to_string());
    }
    out
}

/// A `p11-kit server` serving one SoftHSM token on a unix socket, in a process group of
/// its own: `kill` (and drop) SIGKILLs the server and the `p11-kit-remote` processes it
/// forked for each connection — the remote HSM is gone.
pub struct P11KitServer {
    child: Option<Child>,
    pub sock: PathBuf,
}

impl P11KitServer {
    /// Start serving token `token` of `soft` on `sock`; returns once the socket is ready.
    pub fn start(soft: &SoftHsm, token: &str, sock: &Path) -> P11KitServer {
        let log = sock.with_extension(format!("{}.log", rand::random::<u32>()));
        let mut child = Command::new("p11-kit")
            .arg("server")
            .arg("-f")
            .arg("-n")
            .arg(sock)
            .arg("--provider")
            .arg(&soft.module)
            .arg(format!("pkcs11:token={token}"))
            .env("SOFTHSM2_CONF", &soft.conf)
            .process_group(0)
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(&log).expect("p11-kit log"))
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn p11-kit server");
        let start = Instant::now();
        loop {
            let out = std::fs::read_to_string(&log).unwrap_or_default();
            if out.contains("P11_KIT_SERVER_PID") && sock.exists() {
                break;
            }
            if let Some(st) = child.try_wait().expect("wait p11-kit") {
                panic!("p11-kit server exited ({st}):\n{out}");
            }
            if start.elapsed() > Duration::from_secs(10) {
                kill_group(&mut child);
                panic!("p11-kit server not ready within 10 s:\n{out}");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = std::fs::remove_file(log);
        P11KitServer {
            child: Some(child),
            sock: sock.to_owned(),
        }
    }

    /// `P11_KIT_SERVER_ADDRESS` for processes that reach it through p11-kit-client.so.
    pub fn address(sock: &Path) -> String {
        format!("unix:path={}", sock.display())
    }

    /// SIGKILL the server and its connection processes, and reap the server.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            kill_group(&mut c);
        }
    }
}

fn kill_group(child: &mut Child) {
    let pgid = child.id() as libc::pid_t;
    // SAFETY: kill(2) on the process group this test created (process_group(0) above).
    unsafe {
        libc::kill(-pgid, libc::SIGKILL);
    }
    let _ = child.wait();
}

impl Drop for P11KitServer {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A key store of one embedded instance (`emb`) and one SoftHSM2 token (`soft1`), its
/// backend PINs in the environment variables `SOFT1_PIN`/`SOFT1_SO_PIN`; `emb_extra` and
/// `soft_extra` are further lines of each `[[hsm]]` entry. Returns the configuration and
/// the environment a process using the store needs.
pub struct MixedStore {
    pub cfg: PathBuf,
    pub envs: Vec<(&'static str, String)>,
}

impl MixedStore {
    pub fn new(dir: &Path, soft: &SoftHsm, emb_extra: &str, soft_extra: &str) -> MixedStore {
        let cfg = dir.join("cks.toml");
        std::fs::write(
            &cfg,
            format!(
                "[keystore]\nlabel = \"mixed\"\ndata_dir = \"{d}/data\"\n\
                 [kdf]\nmemory_kib = 64\niterations = 1\n\
                 [[hsm]]\nid = \"emb\"\nkind = \"embedded\"\n{emb_extra}\n\
                 [[hsm]]\nid = \"soft1\"\nkind = \"pkcs11\"\nmodule = \"{m}\"\n\
                 token_label = \"soft1\"\npin_env = \"SOFT1_PIN\"\nso_pin_env = \"SOFT1_SO_PIN\"\n\
                 {soft_extra}\n",
                d = dir.display(),
                m = soft.module.display(),
            ),
        )
        .expect("write cks.toml");
        let (conf_var, conf) = soft.env();
        let envs = vec![
            ("CKS_CONFIG", cfg.display().to_string()),
            (conf_var, conf),
            ("SOFT1_PIN", SOFT_PIN.to_string()),
            ("SOFT1_SO_PIN", SOFT_SO_PIN.to_string()),
        ];
        MixedStore { cfg, envs }
    }

    pub fn env_refs(&self) -> Vec<(&str, &str)> {
        self.envs.iter().map(|(k, v)| (*k, v.as_str())).collect()
    }

    /// Run `cks ARGS` against the store; it must succeed.
    pub fn cks(&self, args: &[&str]) {
        let out = Command::new(env!("CARGO_BIN_EXE_cks"))
            .args(args)
            .envs(self.env_refs())
            .output()
            .expect("run cks");
        assert!(
            out.status.success(),
            "cks {args:?}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}
