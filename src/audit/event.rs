//! What is recorded: the configuration, the `Event` callers hand in, and the exact
//! JSON line written for it.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::path::PathBuf;

use super::AuditError;

/// How hard `AuditLog::record` works to put a record on disk before returning.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Durability {
    /// Nothing is recorded.
    Off,
    /// `record` returns at once; the writer thread writes and fsyncs within 100 ms.
    #[default]
    Batch,
    /// `record` returns once its record is fsync'd (group commit across threads).
    Sync,
}

impl std::fmt::Display for Durability {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Durability::Off => "off",
            Durability::Batch => "batch",
            Durability::Sync => "sync",
        })
    }
}

impl std::str::FromStr for Durability {
    type Err = AuditError;
    fn from_str(s: &str) -> Result<Self, AuditError> {
        match s {
            "off" => Ok(Durability::Off),
            "batch" => Ok(Durability::Batch),
            "sync" => Ok(Durability::Sync),
            other => Err(AuditError::Config(format!(
                "durability must be off, batch or sync, not {other:?}"
            ))),
        }
    }
}

pub const DEFAULT_MAX_SEGMENT_BYTES: u64 = 64 * 1024 * 1024;

fn default_max_segment_bytes() -> u64 {
    DEFAULT_MAX_SEGMENT_BYTES
}

/// The `[audit]` section of the configuration. An empty `dir` means "not set": the
/// caller fills it in (for example `<key store>/audit`) before `AuditLog::open`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AuditConfig {
    pub dir: PathBuf,
    pub durability: Durability,
    /// A segment file is rotated once it holds this many bytes (and at each UTC midnight).
    #[serde(default = "default_max_segment_bytes")]
    pub max_segment_bytes: u64,
}

impl Default for AuditConfig {
    fn default() -> Self {
        AuditConfig {
            dir: PathBuf::new(),
            durability: Durability::Batch,
            max_segment_bytes: DEFAULT_MAX_SEGMENT_BYTES,
        }
    }
}

impl AuditConfig {
    pub fn new(dir: impl Into<PathBuf>, durability: Durability) -> AuditConfig {
        AuditConfig {
            dir: dir.into(),
            durability,
            ..AuditConfig::default()
        }
    }
}

/// One audit record as the caller describes it. `host`, `pid`, `time`, `seq` and the
/// chain fields are added by the log.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Event {
    /// "encrypt_init", "encrypt", "sign", "login", "key_create", "key_state", "purge", ...
    pub op: &'static str,
    pub session: Option<u64>,
    /// "user" | "so" | "public"
    pub user: Option<&'static str>,
    /// e.g. "CKM_AES_GCM"
    pub mechanism: Option<std::borrow::Cow<'static, str>>,
    /// CMK id.
    pub key_id: Option<KeyRef>,
    pub key_version: Option<u32>,
    /// The HSM instance that served the operation.
    pub instance: Option<std::borrow::Cow<'static, str>>,
    /// "CKR_OK", "CKR_PIN_INCORRECT", ...
    pub result: &'static str,
    pub latency_us: Option<u64>,
    /// Why: for failures and administrative actions.
    pub reason: Option<String>,
    /// Structured extras, e.g. a purge proof.
    pub detail: Option<serde_json::Value>,
}

/// A key id in a record: a UUID (copied by value, written out by the log: no reference
/// count that every thread using the key would share), or text that is no UUID.
#[derive(Debug, Clone, PartialEq)]
pub enum KeyRef {
    Id(uuid::Uuid),
    Text(std::sync::Arc<str>),
}

impl KeyRef {
    /// The id named by `text`: a UUID when it is one.
    pub fn parse(text: &str) -> KeyRef {
        match uuid::Uuid::try_parse(text) {
            Ok(u) if u.hyphenated().to_string() == text => KeyRef::Id(u),
            _ => KeyRef::Text(text.into()),
        }
    }
}

impl std::fmt::Display for KeyRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            KeyRef::Id(u) => u.hyphenated().fmt(f),
            KeyRef::Text(t) => f.write_str(t),
        }
    }
}

impl From<uuid::Uuid> for KeyRef {
    fn from(u: uuid::Uuid) -> KeyRef {
        KeyRef::Id(u)
    }
}

impl From<&str> for KeyRef {
    fn from(s: &str) -> KeyRef {
        KeyRef::Text(s.into())
    }
}

impl From<String> for KeyRef {
    fn from(s: String) -> KeyRef {
        KeyRef::Text(s.into())
    }
}

impl Event {
    pub fn new(op: &'static str, result: &'static str) -> Event {
        Event {
            op,
            result,
            ..Event::default()
        }
    }
}

/// A record waiting for the writer, as plain data. The strings a caller hands in as `Arc`
/// or `String` are copied into its batch's byte arena by the calling thread, which then
/// drops the `Event` itself: the writer thread never touches (nor frees) the callers'
/// allocations, and no shared reference count travels between cores per record.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Rec {
    pub time_us: i64,
    session: u64,
    latency_us: u64,
    key_version: u32,
    /// `HAS_*` bits: which of the numbers above are present.
    has: u8,
    op: &'static str,
    user: Option<&'static str>,
    result: &'static str,
    /// A mechanism name known at compile time (the usual case), else `mechanism_text`.
    mechanism: Option<&'static str>,
    mechanism_text: Span,
    key_id: Span,
    instance: Span,
    reason: Span,
    /// `detail` already encoded as JSON.
    detail: Span,
}

const HAS_SESSION: u8 = 1;
const HAS_LATENCY: u8 = 2;
const HAS_VERSION: u8 = 4;

/// Bytes `start..start + len` of a batch's arena; `start == u32::MAX` means "absent".
#[derive(Debug, Clone, Copy)]
struct Span {
    start: u32,
    len: u32,
}

impl Span {
    const NONE: Span = Span {
        start: u32::MAX,
        len: 0,
    };
}

/// Records on their way to the writer: fixed-size entries plus one arena for their text.
/// Both vectors are cleared and reused, so a steady stream allocates nothing.
#[derive(Debug, Default)]
pub(crate) struct Batch {
    pub recs: Vec<Rec>,
    text: Vec<u8>,
}

/// The arena never holds more than this; `AuditLog::record` waits for the writer first.
pub(crate) const MAX_ARENA_BYTES: usize = 1 << 30;

impl Batch {
    pub fn with_capacity(records: usize) -> Batch {
        Batch {
            recs: Vec::with_capacity(records),
            text: Vec::with_capacity(records * 64),
        }
    }

    pub fn len(&self) -> usize {
        self.recs.len()
    }

    pub fn is_empty(&self) -> bool {
        self.recs.is_empty()
    }

    pub fn arena_bytes(&self) -> usize {
        self.text.len()
    }

    pub fn clear(&mut self) {
        self.recs.clear();
        self.text.clear();
    }

    /// Gives back memory after a backlog: keeps room for about `records` records.
    pub fn shrink(&mut self, records: usize) {
        if self.recs.capacity() > records {
            self.recs.shrink_to(records);
        }
        if self.text.capacity() > records * 256 {
            self.text.shrink_to(records * 64);
        }
    }

    fn put(&mut self, s: &[u8]) -> Span {
        // Offsets fit in u32: `record` keeps the arena under `MAX_ARENA_BYTES` (1 GiB)
        // before adding a record, and no single field comes near 3 GiB.
        let (Ok(start), Ok(len)) = (u32::try_from(self.text.len()), u32::try_from(s.len())) else {
            return Span::NONE;
        };
        if start.checked_add(len).is_none_or(|end| end == u32::MAX) {
            return Span::NONE;
        }
        self.text.extend_from_slice(s);
        Span { start, len }
    }

    fn put_opt(&mut self, s: Option<&str>) -> Span {
        s.map_or(Span::NONE, |s| self.put(s.as_bytes()))
    }

    fn get(&self, s: Span) -> Option<&[u8]> {
        if s.start == u32::MAX {
            return None;
        }
        let start = s.start as usize;
        self.text.get(start..start + s.len as usize)
    }

    /// Adds a record (copying its text; the caller drops `e`).
    pub fn push(&mut self, time_us: i64, e: &Event) {
        let mut has = 0;
        if e.session.is_some() {
            has |= HAS_SESSION;
        }
        if e.latency_us.is_some() {
            has |= HAS_LATENCY;
        }
        if e.key_version.is_some() {
            has |= HAS_VERSION;
        }
        let (mechanism, mechanism_text) = match &e.mechanism {
            None => (None, Span::NONE),
            Some(std::borrow::Cow::Borrowed(m)) => (Some(*m), Span::NONE),
            Some(std::borrow::Cow::Owned(m)) => (None, self.put(m.as_bytes())),
        };
        let key_id = match &e.key_id {
            None => Span::NONE,
            Some(KeyRef::Id(u)) => {
                let mut text = [0u8; uuid::fmt::Hyphenated::LENGTH];
                self.put(u.hyphenated().encode_lower(&mut text).as_bytes())
            }
            Some(KeyRef::Text(t)) => self.put(t.as_bytes()),
        };
        let instance = self.put_opt(e.instance.as_deref());
        let reason = self.put_opt(e.reason.as_deref());
        let detail = match &e.detail {
            None => Span::NONE,
            // Encoding a `Value` cannot fail (its map keys are strings).
            Some(v) => self.put(serde_json::to_string(v).unwrap_or_default().as_bytes()),
        };
        self.recs.push(Rec {
            time_us,
            session: e.session.unwrap_or(0),
            latency_us: e.latency_us.unwrap_or(0),
            key_version: e.key_version.unwrap_or(0),
            has,
            op: e.op,
            user: e.user,
            result: e.result,
            mechanism,
            mechanism_text,
            key_id,
            instance,
            reason,
            detail,
        });
    }
}

/// Where a line sits in its chain.
pub(crate) struct LineCtx<'a> {
    pub seq: u64,
    /// `2024-05-01T12:34:56.123456Z`
    pub time: &'a [u8],
    /// `,"host":"<host>","pid":<pid>` (the same on every line of a process).
    pub host_pid: &'a [u8],
    pub continues: Option<&'a str>,
    pub prev: &'a [u8; 32],
}

/// `,"host":"<host>","pid":<pid>`, computed once per writer.
pub(crate) fn host_pid_fragment(host: &str, pid: u32) -> Vec<u8> {
    let mut v = Vec::with_capacity(32 + host.len());
    v.extend_from_slice(b",\"host\":");
    put_str(&mut v, host.as_bytes());
    v.extend_from_slice(b",\"pid\":");
    put_u64(&mut v, u64::from(pid));
    v
}

/// Appends record `r` of batch `b` as its JSON line (without newline) to `out`: exactly the
/// bytes serde_json produced for the same fields in this order (compact, `null` for
/// absent values, `continues` omitted unless present), written without serde's generic
/// machinery. `prev` comes last; the chain hash covers every byte of the line.
pub(crate) fn write_line(out: &mut Vec<u8>, b: &Batch, r: &Rec, ctx: &LineCtx<'_>) {
    // One capacity check for the usual line instead of growth checks along the way.
    out.reserve(512);
    out.extend_from_slice(b"{\"seq\":");
    put_u64(out, ctx.seq);
    out.extend_from_slice(b",\"time\":");
    put_str(out, ctx.time);
    out.extend_from_slice(ctx.host_pid);
    if let Some(c) = ctx.continues {
        out.extend_from_slice(b",\"continues\":");
        put_str(out, c.as_bytes());
    }
    out.extend_from_slice(b",\"session\":");
    put_opt_u64(out, (r.has & HAS_SESSION != 0).then_some(r.session));
    out.extend_from_slice(b",\"user\":");
    put_opt_str(out, r.user.map(str::as_bytes));
    out.extend_from_slice(b",\"op\":");
    put_str(out, r.op.as_bytes());
    out.extend_from_slice(b",\"mechanism\":");
    put_opt_str(
        out,
        r.mechanism.map(str::as_bytes).or(b.get(r.mechanism_text)),
    );
    out.extend_from_slice(b",\"key_id\":");
    put_opt_str(out, b.get(r.key_id));
    out.extend_from_slice(b",\"key_version\":");
    put_opt_u64(
        out,
        (r.has & HAS_VERSION != 0).then_some(u64::from(r.key_version)),
    );
    out.extend_from_slice(b",\"instance\":");
    put_opt_str(out, b.get(r.instance));
    out.extend_from_slice(b",\"result\":");
    put_str(out, r.result.as_bytes());
    out.extend_from_slice(b",\"latency_us\":");
    put_opt_u64(out, (r.has & HAS_LATENCY != 0).then_some(r.latency_us));
    out.extend_from_slice(b",\"reason\":");
    put_opt_str(out, b.get(r.reason));
    out.extend_from_slice(b",\"detail\":");
    match b.get(r.detail) {
        Some(json) => out.extend_from_slice(json),
        None => out.extend_from_slice(b"null"),
    }
    out.extend_from_slice(b",\"prev\":\"");
    out.extend_from_slice(&Hex64::new(ctx.prev).0);
    out.extend_from_slice(b"\"}");
}

fn put_u64(out: &mut Vec<u8>, mut v: u64) {
    let mut buf = [0u8; 20];
    let mut i = buf.len();
    loop {
        i -= 1;
        buf[i] = b'0' + (v % 10) as u8;
        v /= 10;
        if v == 0 {
            break;
        }
    }
    out.extend_from_slice(&buf[i..]);
}

fn put_opt_u64(out: &mut Vec<u8>, v: Option<u64>) {
    match v {
        Some(v) => put_u64(out, v),
        None => out.extend_from_slice(b"null"),
    }
}

fn put_opt_str(out: &mut Vec<u8>, s: Option<&[u8]>) {
    match s {
        Some(s) => put_str(out, s),
        None => out.extend_from_slice(b"null"),
    }
}

/// What serde_json writes for each byte of a string: 0 = itself, `u` = `\u00XX`, else
/// a backslash and that character.
const ESCAPE: [u8; 256] = {
    let mut t = [0u8; 256];
    let mut i = 0;
    while i < 0x20 {
        t[i] = b'u';
        i += 1;
    }
    t[0x08] = b'b';
    t[0x09] = b't';
    t[0x0a] = b'n';
    t[0x0c] = b'f';
    t[0x0d] = b'r';
    t[b'"' as usize] = b'"';
    t[b'\\' as usize] = b'\\';
    t
};

/// A JSON string, escaped exactly as serde_json does (UTF-8 passes through).
#[inline]
fn put_str(out: &mut Vec<u8>, s: &[u8]) {
    // Almost every string needs no escaping: check that and copy the string whole.
    let plain = !needs_escape(s);
    out.push(b'"');
    if plain {
        out.extend_from_slice(s);
    } else {
        put_escaped(out, s);
    }
    out.push(b'"');
}

/// Whether any byte of `s` is a control character, '"' or '\\' (eight bytes at a time).
#[inline]
fn needs_escape(s: &[u8]) -> bool {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGH: u64 = 0x8080_8080_8080_8080;
    // Non-zero iff some byte of `x` is below `n` (n <= 0x80), resp. is zero.
    let less = |x: u64, n: u64| x.wrapping_sub(ONES * n) & !x & HIGH;
    let zero = |x: u64| x.wrapping_sub(ONES) & !x & HIGH;
    let mut chunks = s.chunks_exact(8);
    let mut hit = 0;
    for c in &mut chunks {
        let mut w = [0u8; 8];
        w.copy_from_slice(c);
        let x = u64::from_le_bytes(w);
        hit |= less(x, 0x20) | zero(x ^ (ONES * 0x22)) | zero(x ^ (ONES * 0x5c));
    }
    hit != 0
        || chunks
            .remainder()
            .iter()
            .any(|&c| c < 0x20 || c == b'"' || c == b'\\')
}

#[cold]
fn put_escaped(out: &mut Vec<u8>, s: &[u8]) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut start = 0;
    for (i, &c) in s.iter().enumerate() {
        let esc = ESCAPE[usize::from(c)];
        if esc == 0 {
            continue;
        }
        out.extend_from_slice(&s[start..i]);
        if esc == b'u' {
            out.extend_from_slice(b"\\u00");
            out.push(HEX[usize::from(c >> 4)]);
            out.push(HEX[usize::from(c & 15)]);
        } else {
            out.push(b'\\');
            out.push(esc);
        }
        start = i + 1;
    }
    out.extend_from_slice(&s[start..]);
}

pub(crate) fn line_hash(line: &[u8]) -> [u8; 32] {
    Sha256::digest(line).into()
}

pub(crate) const ZERO_HASH: [u8; 32] = [0; 32];

/// A SHA-256 hash in lower-case hex, without allocating.
pub(crate) struct Hex64([u8; 64]);

/// The two hex digits of every byte value.
const HEX_PAIRS: [[u8; 2]; 256] = {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut t = [[0u8; 2]; 256];
    let mut i = 0;
    while i < 256 {
        t[i] = [DIGITS[i >> 4], DIGITS[i & 15]];
        i += 1;
    }
    t
};

impl Hex64 {
    pub fn new(h: &[u8; 32]) -> Hex64 {
        let mut out = [0u8; 64];
        for (pair, b) in out.chunks_exact_mut(2).zip(h) {
            pair.copy_from_slice(&HEX_PAIRS[usize::from(*b)]);
        }
        Hex64(out)
    }

    pub fn as_str(&self) -> &str {
        // Always ASCII hex digits.
        std::str::from_utf8(&self.0).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::borrow::Cow;

    /// The line as serde_json wrote it before the hand-written encoder: the reference.
    #[derive(Serialize)]
    struct Line<'a> {
        seq: u64,
        time: &'a str,
        host: &'a str,
        pid: u32,
        #[serde(skip_serializing_if = "Option::is_none")]
        continues: Option<&'a str>,
        session: Option<u64>,
        user: Option<&'a str>,
        op: &'a str,
        mechanism: Option<&'a str>,
        key_id: Option<&'a str>,
        key_version: Option<u32>,
        instance: Option<&'a str>,
        result: &'a str,
        latency_us: Option<u64>,
        reason: Option<&'a str>,
        detail: Option<&'a serde_json::Value>,
        prev: &'a str,
    }

    const NASTY: &[&str] = &[
        "",
        "plain",
        "quote\" backslash\\ slash/",
        "\u{0}\u{1}\u{8}\t\n\u{b}\u{c}\r\u{1f} \u{7f}",
        "é ü 日本 🙂 \u{2028}\u{2029}",
        "\\u0041",
    ];

    fn events() -> Vec<Event> {
        let mut v = vec![Event::new("login", "CKR_PIN_INCORRECT")];
        for (i, s) in NASTY.iter().enumerate() {
            let i = i as u64;
            v.push(Event {
                op: "sign",
                session: Some(i * 1_000_000_007),
                user: Some("user"),
                mechanism: Some(if i % 2 == 0 {
                    Cow::Borrowed("CKM_ECDSA")
                } else {
                    Cow::Owned(format!("CKM_{s}"))
                }),
                key_id: Some((*s).into()),
                key_version: Some(u32::MAX - i as u32),
                instance: Some(format!("hsm{s}").into()),
                result: "CKR_OK",
                latency_us: Some(u64::MAX.checked_div(i).unwrap_or(0)),
                reason: (i % 2 == 1).then(|| format!("why: {s}")),
                detail: (i % 3 != 2).then(
                    || serde_json::json!({ "s": s, "n": i, "f": 1.5, "a": [null, true, {"k": s}] }),
                ),
            });
            v.push(Event {
                user: None,
                session: None,
                latency_us: None,
                key_version: None,
                key_id: Some(KeyRef::Id(uuid::Uuid::from_u128(
                    0x5f0c_6c2e_8d0e_4c55_9a3e_0b1d_2f3a_4b5c_u128.rotate_left(i as u32),
                ))),
                ..Event::new("purge", "CKR_OK")
            });
        }
        v
    }

    /// A key id is written exactly as the attribute held it, UUID or not.
    #[test]
    fn key_ref_keeps_the_text_it_was_given() {
        for text in [
            "5f0c6c2e-8d0e-4c55-9a3e-0b1d2f3a4b5c",
            "5F0C6C2E-8D0E-4C55-9A3E-0B1D2F3A4B5C",
            "5f0c6c2e8d0e4c559a3e0b1d2f3a4b5c",
            "alias/x",
            "",
        ] {
            let k = KeyRef::parse(text);
            assert_eq!(k.to_string(), text);
            let mut b = Batch::default();
            b.push(
                0,
                &Event {
                    key_id: Some(k.clone()),
                    ..Event::new("sign", "CKR_OK")
                },
            );
            assert_eq!(b.get(b.recs[0].key_id), Some(text.as_bytes()));
            assert_eq!(matches!(k, KeyRef::Id(_)), text.starts_with("5f0c6c2e-"));
        }
    }

    #[test]
    fn escape_check_finds_every_special_byte_at_every_position() {
        for len in 0..40 {
            for pos in 0..len {
                for c in 0..=255u8 {
                    let mut v = vec![b'a'; len];
                    v[pos] = c;
                    let expect = c < 0x20 || c == b'"' || c == b'\\';
                    assert_eq!(needs_escape(&v), expect, "{len} {pos} {c}");
                    // Likewise among multi-byte UTF-8 (bytes >= 0x80).
                    let mut u = vec![0xc3; len];
                    u[pos] = c;
                    assert_eq!(needs_escape(&u), expect, "{len} {pos} {c} in 0xc3");
                }
            }
        }
        assert_eq!(Hex64::new(&[0xab; 32]).as_str(), "ab".repeat(32));
    }

    #[test]
    fn encoder_matches_serde_json_byte_for_byte() {
        let host = "host-1.example_x";
        let host_pid = host_pid_fragment(host, 4_294_967_295);
        let mut b = Batch::default();
        let evs = events();
        for (i, e) in evs.iter().enumerate() {
            b.push(i as i64, e);
        }
        let mut prev = ZERO_HASH;
        for (i, (e, r)) in evs.iter().zip(&b.recs).enumerate() {
            let time = "2024-02-29T23:59:59.999999Z";
            let continues = (i % 4 == 1).then_some("h-1-2-3.jsonl");
            let mut ours = Vec::new();
            let ctx = LineCtx {
                seq: i as u64,
                time: time.as_bytes(),
                host_pid: &host_pid,
                continues,
                prev: &prev,
            };
            write_line(&mut ours, &b, r, &ctx);
            let hex = Hex64::new(&prev);
            let key_text = e.key_id.as_ref().map(KeyRef::to_string);
            let reference = serde_json::to_vec(&Line {
                seq: i as u64,
                time,
                host,
                pid: 4_294_967_295,
                continues,
                session: e.session,
                user: e.user,
                op: e.op,
                mechanism: e.mechanism.as_deref(),
                key_id: key_text.as_deref(),
                key_version: e.key_version,
                instance: e.instance.as_deref(),
                result: e.result,
                latency_us: e.latency_us,
                reason: e.reason.as_deref(),
                detail: e.detail.as_ref(),
                prev: hex.as_str(),
            })
            .unwrap();
            assert_eq!(
                String::from_utf8_lossy(&ours),
                String::from_utf8_lossy(&reference),
                "event {i}"
            );
            assert_eq!(ours, reference);
            prev = line_hash(&ours);
        }
    }
}
