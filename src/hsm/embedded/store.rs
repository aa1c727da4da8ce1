//! The embedded instance's durable store: one SQLite database per instance directory.
//! SQLite gives crash safety (a key is either fully there or not at all) and safe
//! sharing between processes (WAL, busy timeout); `PRAGMA data_version` tells a
//! process cheaply that another one changed something.

use super::seal::PinSeal;
use crate::error::{Error, Result};
use parking_lot::Mutex;
use rusqlite::{params, Connection, OptionalExtension, TransactionBehavior};
use std::path::{Path, PathBuf};
use uuid::Uuid;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PinUser {
    So = 0,
    User = 1,
}

#[derive(Clone, Debug)]
pub struct TokenRecord {
    pub label: String,
    pub serial: String,
}

#[derive(Clone, Debug)]
pub struct PinRecord {
    pub seal: PinSeal,
    pub failures: u32,
}

/// One object as stored: its attributes (encoded by the token layer) and, for keys,
/// its material — sealed under the instance key when it is secret.
#[derive(Clone, Debug)]
pub struct StoredObject {
    pub uid: Uuid,
    pub attrs: Vec<u8>,
    pub material: Option<Vec<u8>>,
    pub sealed: bool,
}

pub struct Store {
    conn: Mutex<Connection>,
    path: PathBuf,
}

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS meta (k TEXT PRIMARY KEY, v BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS pins (
    user INTEGER PRIMARY KEY,
    seal BLOB NOT NULL,
    failures INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS tombstones (uid BLOB PRIMARY KEY);
CREATE TABLE IF NOT EXISTS objects (
    uid BLOB PRIMARY KEY,
    attrs BLOB NOT NULL,
    material BLOB,
    sealed INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS cmks (
    id BLOB PRIMARY KEY,
    generation INTEGER NOT NULL,
    meta BLOB NOT NULL
);
";

impl Store {
    pub fn open(dir: &Path, file: &str) -> Result<Store> {
        std::fs::create_dir_all(dir).map_err(|e| {
            Error::device(format!(
                "cannot create instance directory {}: {e}",
                dir.display()
            ))
        })?;
        restrict_permissions(dir);
        let path = dir.join(file);
        let conn = Connection::open(&path)
            .map_err(|e| Error::device(format!("cannot open {}: {e}", path.display())))?;
        conn.busy_timeout(std::time::Duration::from_secs(10))?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "FULL")?;
        conn.execute_batch(SCHEMA)?;
        Ok(Store {
            conn: Mutex::new(conn),
            path,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Changes whenever another connection (another process) commits.
    pub fn data_version(&self) -> Result<i64> {
        let conn = self.conn.lock();
        Ok(conn.query_row("PRAGMA data_version", [], |r| r.get(0))?)
    }

    pub fn token(&self) -> Result<Option<TokenRecord>> {
        let conn = self.conn.lock();
        let get = |k: &str| -> Result<Option<String>> {
            Ok(conn
                .query_row("SELECT v FROM meta WHERE k = ?1", [k], |r| {
                    r.get::<_, String>(0)
                })
                .optional()?)
        };
        match (get("label")?, get("serial")?) {
            (Some(label), Some(serial)) => Ok(Some(TokenRecord { label, serial })),
            _ => Ok(None),
        }
    }

    pub fn meta(&self, k: &str) -> Result<Option<Vec<u8>>> {
        let conn = self.conn.lock();
        Ok(conn
            .query_row("SELECT v FROM meta WHERE k = ?1", [k], |r| {
                r.get::<_, Vec<u8>>(0)
            })
            .optional()?)
    }

    pub fn set_meta(&self, k: &str, v: &[u8]) -> Result<()> {
        let conn = self.conn.lock();
        conn.execute(
            "INSERT OR REPLACE INTO meta (k, v) VALUES (?1, ?2)",
            params![k, v],
        )?;
        Ok(())
    }

    /// Start over: no objects, and exactly these secrets in `meta`. One transaction.
    pub fn reset(&self, meta: &[(&str, &[u8])]) -> Result<()> {
        let mut conn = self.conn.lock();
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        tx.execute("DELETE FROM objects", [])?;
        tx.execute("DELETE FROM tombstones", [])?;
        tx.execute("DELETE FROM cmks", [])?;
        for (k, v) in meta {
            tx.execute(
                "INSERT OR REPLACE INTO meta (k, v) VALUES (?1, ?2)",
                params![k, v],
            )?;
        }
        tx.commit()?;
        Ok(())
    }

    /// Remember that a token object was destroyed, so members that missed it catch up.
    pub fn add_tombstone(&self, uid: Uuid) -> Result<()> {
        let conn = self.conn.lock();
        conn.execute(
            "INSERT OR IGNORE INTO tombstones (uid) VALUES (?1)",
            [uid.as_bytes().as_slice()],
        )?;
        Ok(())
    }

    pub fn tombstones(&self) -> Result<Vec<Uuid>> {
        let conn = self.conn.lock();
        let mut stmt = conn.prepare_cached("SELECT uid FROM tombstones")?;
        let rows = stmt.query_map([], |r| r.get::<_, Vec<u8>>(0))?;
        let mut out = Vec::new();
        for r in rows {
            if let Ok(u) = Uuid::from_slice(&r?) {
                out.push(u);
            }
        }
        Ok(out)
    }

    pub fn object(&self, uid: Uuid) -> Result<Option<StoredObject>> {
        let conn = self.conn.lock();
        let mut stmt =
            conn.prepare_cached("SELECT attrs, material, sealed FROM objects WHERE uid = ?1")?;
        Ok(stmt
            .query_row([uid.as_bytes().as_slice()], |r| {
                Ok(StoredObject {
                    uid,
                    attrs: r.get(0)?,
                    material: r.get(1)?,
                    sealed: r.get(2)?,
                })
            })
            .optional()?)
    }

    pub fn object_ids(&self) -> Result<Vec<Uuid>> {
        let conn = self.conn.lock();
        let mut stmt = conn.prepare_cached("SELECT uid FROM objects")?;
        let rows = stmt.query_map([], |r| r.get::<_, Vec<u8>>(0))?;
        let mut out = Vec::new();
        for r in rows {
            let u = Uuid::from_slice(&r?).map_err(|_| Error::device("corrupt object id"))?;
            out.push(u);
        }
        Ok(out)
    }

    pub fn pin(&self, user: PinUser) -> Result<Option<PinRecord>> {
        let conn = self.conn.lock();
        let row = conn
            .query_row(
                "SELECT seal, failures FROM pins WHERE user = ?1",
                [user as i64],
                |r| Ok((r.get::<_, Vec<u8>>(0)?, r.get::<_, u32>(1)?)),
            )
            .optional()?;
        row.map(|(seal, failures)| {
            let seal = postcard::from_bytes(&seal)
                .map_err(|e| Error::device(format!("corrupt PIN record: {e}")))?;
            Ok(PinRecord { seal, failures })
        })
        .transpose()
    }

    /// (Re)initialise the token: every object and the user PIN are gone, the SO PIN
    /// seals a fresh instance key. One transaction: all or nothing.
    pub fn init_token(&self, label: &str, serial: &str, so: &PinSeal) -> Result<()> {
        let mut conn = self.conn.lock();
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        tx.execute("DELETE FROM objects", [])?;
        tx.execute("DELETE FROM tombstones", [])?;
        tx.execute("DELETE FROM pins", [])?;
        tx.execute(
            "INSERT INTO pins (user, seal, failures) VALUES (?1, ?2, 0)",
            params![PinUser::So as i64, encode_seal(so)?],
        )?;
        for (k, v) in [("label", label), ("serial", serial)] {
            tx.execute(
                "INSERT OR REPLACE INTO meta (k, v) VALUES (?1, ?2)",
                params![k, v],
            )?;
        }
        tx.commit()?;
        Ok(())
    }

    pub fn set_pin(&self, user: PinUser, seal: &PinSeal) -> Result<()> {
        let conn = self.conn.lock();
        conn.execute(
            "INSERT OR REPLACE INTO pins (user, seal, failures) VALUES (?1, ?2, 0)",
            params![user as i64, encode_seal(seal)?],
        )?;
        Ok(())
    }

    /// Count one wrong PIN; returns the count after it. Atomic across processes.
    pub fn record_failure(&self, user: PinUser) -> Result<u32> {
        let mut conn = self.conn.lock();
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        tx.execute(
            "UPDATE pins SET failures = failures + 1 WHERE user = ?1",
            [user as i64],
        )?;
        let n: u32 = tx
            .query_row(
                "SELECT failures FROM pins WHERE user = ?1",
                [user as i64],
                |r| r.get(0),
            )
            .optional()?
            .unwrap_or(0);
        tx.commit()?;
        Ok(n)
    }

    pub fn reset_failures(&self, user: PinUser) -> Result<()> {
        let conn = self.conn.lock();
        conn.execute(
            "UPDATE pins SET failures = 0 WHERE user = ?1 AND failures <> 0",
            [user as i64],
        )?;
        Ok(())
    }

    pub fn load_objects(&self) -> Result<Vec<StoredObject>> {
        let conn = self.conn.lock();
        let mut stmt = conn.prepare_cached("SELECT uid, attrs, material, sealed FROM objects")?;
        let rows = stmt.query_map([], |r| {
            Ok((
                r.get::<_, Vec<u8>>(0)?,
                r.get::<_, Vec<u8>>(1)?,
                r.get::<_, Option<Vec<u8>>>(2)?,
                r.get::<_, bool>(3)?,
            ))
        })?;
        let mut out = Vec::new();
        for row in rows {
            let (uid, attrs, material, sealed) = row?;
            let uid = Uuid::from_slice(&uid)
                .map_err(|_| Error::device("corrupt object id in instance store"))?;
            out.push(StoredObject {
                uid,
                attrs,
                material,
                sealed,
            });
        }
        Ok(out)
    }

    /// How many objects hold sealed (secret or private) material.
    pub fn sealed_count(&self) -> Result<usize> {
        let conn = self.conn.lock();
        let n: i64 = conn.query_row("SELECT count(*) FROM objects WHERE sealed <> 0", [], |r| {
            r.get(0)
        })?;
        Ok(n as usize)
    }

    /// Every object's id and attributes, without the material.
    pub fn load_attrs(&self) -> Result<Vec<(Uuid, Vec<u8>)>> {
        let conn = self.conn.lock();
        let mut stmt = conn.prepare_cached("SELECT uid, attrs FROM objects")?;
        let rows = stmt.query_map([], |r| {
            Ok((r.get::<_, Vec<u8>>(0)?, r.get::<_, Vec<u8>>(1)?))
        })?;
        let mut out = Vec::new();
        for row in rows {
            let (uid, attrs) = row?;
            let uid = Uuid::from_slice(&uid)
                .map_err(|_| Error::device("corrupt object id in instance store"))?;
            out.push((uid, attrs));
        }
        Ok(out)
    }

    /// The attributes of those of `uids` that are here.
    pub fn load_attrs_of(&self, uids: &[Uuid]) -> Result<Vec<(Uuid, Vec<u8>)>> {
        let conn = self.conn.lock();
        let mut stmt = conn.prepare_cached("SELECT attrs FROM objects WHERE uid = ?1")?;
        let mut out = Vec::new();
        for uid in uids {
            if let Some(attrs) = stmt
                .query_row([uid.as_bytes().as_slice()], |r| r.get::<_, Vec<u8>>(0))
                .optional()?
            {
                out.push((*uid, attrs));
            }
        }
        Ok(out)
    }

    pub fn insert_object(&self, obj: &StoredObject) -> Result<()> {
        let conn = self.conn.lock();
        conn.execute(
            "INSERT INTO objects (uid, attrs, material, sealed) VALUES (?1, ?2, ?3, ?4)",
            params![
                obj.uid.as_bytes().as_slice(),
                obj.attrs,
                obj.material,
                obj.sealed
            ],
        )?;
        Ok(())
    }

    pub fn update_attrs(&self, uid: Uuid, attrs: &[u8]) -> Result<bool> {
        let conn = self.conn.lock();
        let n = conn.execute(
            "UPDATE objects SET attrs = ?2 WHERE uid = ?1",
            params![uid.as_bytes().as_slice(), attrs],
        )?;
        Ok(n == 1)
    }

    /// Store a CMK's metadata record unless a record of the same or a higher
    /// generation is already there. Returns whether it was written.
    pub fn put_cmk(&self, id: Uuid, generation: u64, meta: &[u8]) -> Result<bool> {
        let conn = self.conn.lock();
        let n = conn.execute(
            "INSERT INTO cmks (id, generation, meta) VALUES (?1, ?2, ?3)
             ON CONFLICT(id) DO UPDATE SET generation = excluded.generation, meta = excluded.meta
             WHERE excluded.generation > cmks.generation",
            params![id.as_bytes().as_slice(), generation as i64, meta],
        )?;
        Ok(n == 1)
    }

    pub fn load_cmks(&self) -> Result<Vec<(Uuid, u64, Vec<u8>)>> {
        let conn = self.conn.lock();
        let mut stmt = conn.prepare_cached("SELECT id, generation, meta FROM cmks")?;
        let rows = stmt.query_map([], |r| {
            Ok((
                r.get::<_, Vec<u8>>(0)?,
                r.get::<_, i64>(1)?,
                r.get::<_, Vec<u8>>(2)?,
            ))
        })?;
        let mut out = Vec::new();
        for row in rows {
            let (id, g, m) = row?;
            let id = Uuid::from_slice(&id).map_err(|_| Error::device("corrupt key id"))?;
            out.push((id, g as u64, m));
        }
        Ok(out)
    }

    /// Every CMK record's id and generation, without the record.
    pub fn cmk_generations(&self) -> Result<Vec<(Uuid, u64)>> {
        let conn = self.conn.lock();
        let mut stmt = conn.prepare_cached("SELECT id, generation FROM cmks")?;
        let rows = stmt.query_map([], |r| Ok((r.get::<_, Vec<u8>>(0)?, r.get::<_, i64>(1)?)))?;
        let mut out = Vec::new();
        for row in rows {
            let (id, g) = row?;
            let id = Uuid::from_slice(&id).map_err(|_| Error::device("corrupt key id"))?;
            out.push((id, g as u64));
        }
        Ok(out)
    }

    /// The records of those of the CMKs `ids` that are here.
    pub fn load_cmks_of(&self, ids: &[Uuid]) -> Result<Vec<(Uuid, u64, Vec<u8>)>> {
        let conn = self.conn.lock();
        let mut stmt = conn.prepare_cached("SELECT generation, meta FROM cmks WHERE id = ?1")?;
        let mut out = Vec::new();
        for id in ids {
            if let Some((g, m)) = stmt
                .query_row([id.as_bytes().as_slice()], |r| {
                    Ok((r.get::<_, i64>(0)?, r.get::<_, Vec<u8>>(1)?))
                })
                .optional()?
            {
                out.push((*id, g as u64, m));
            }
        }
        Ok(out)
    }

    pub fn delete_cmk(&self, id: Uuid) -> Result<()> {
        let conn = self.conn.lock();
        conn.execute("DELETE FROM cmks WHERE id = ?1", [id.as_bytes().as_slice()])?;
        Ok(())
    }

    pub fn delete_object(&self, uid: Uuid) -> Result<bool> {
        let conn = self.conn.lock();
        let n = conn.execute(
            "DELETE FROM objects WHERE uid = ?1",
            [uid.as_bytes().as_slice()],
        )?;
        Ok(n == 1)
    }
}

fn encode_seal(seal: &PinSeal) -> Result<Vec<u8>> {
    postcard::to_allocvec(seal).map_err(|e| Error::general(format!("encode PIN record: {e}")))
}

#[cfg(unix)]
fn restrict_permissions(dir: &Path) {
    use std::os::unix::fs::PermissionsExt;
    // Best effort: the directory holds sealed material only, but nobody else needs it.
    let _ = std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700));
}

#[cfg(not(unix))]
fn restrict_permissions(_dir: &Path) {}
