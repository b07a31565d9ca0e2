//! The SQLite record store (the seed's `ModelRecordServiceSQL`).
//!
//! Each record is kept whole as JSON in `models.config`, next to indexed copies of the
//! fields the searches use, so a search never parses JSON. Tags live in `model_tags` and file
//! fingerprints in `model_files`; both go with their record (`ON DELETE CASCADE`).
//!
//! The schema's version is SQLite's `user_version`, and `application_id` marks the file as a
//! modelsync store. Opening checks both *before* anything is written, so a foreign database, a
//! file that is not SQLite at all or a store written by a newer modelsync is refused untouched.
//!
//! The schema is created and upgraded by [`rusqlite_migration`], with migrators serialised by
//! a lock on the file and the version read again under it, so any number of processes opening
//! a new, empty or old store at the same moment (a `status` beside the first `apply`) create
//! or migrate it exactly once; the others wait, see the current version and do nothing.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use rusqlite::{Connection, OptionalExtension, TransactionBehavior, params};
use rusqlite_migration::{M, Migrations};

use super::{ConfigChange, ModelFile, RecordStore, StoreError, apply_change};
use crate::config::{AnyModelConfig, InvalidModelConfig};
use crate::taxonomy::{BaseModelType, ModelType};

/// `PRAGMA application_id` of a modelsync store: "MSYN" in ASCII.
pub const APPLICATION_ID: i32 = 0x4d53_594e;

/// How long a write waits for another connection's write to finish before failing.
const BUSY_TIMEOUT: Duration = Duration::from_secs(30);

/// Schema version 1: records as JSON plus the columns the seed's searches need.
const V1: &str = "
CREATE TABLE models (
    key    TEXT NOT NULL PRIMARY KEY,
    name   TEXT NOT NULL,
    type   TEXT NOT NULL,
    base   TEXT NOT NULL,
    format TEXT NOT NULL,
    path   TEXT NOT NULL UNIQUE,
    hash   TEXT NOT NULL DEFAULT '',
    source TEXT NOT NULL DEFAULT '',
    config TEXT NOT NULL
);
CREATE INDEX models_name ON models (name);
CREATE INDEX models_base_type ON models (base, type);
CREATE INDEX models_hash ON models (hash);
PRAGMA application_id = 1297307982;
";

/// Schema version 2: manifest ownership columns, a tag table and file fingerprints. Existing
/// records are backfilled from their JSON.
const V2: &str = "
ALTER TABLE models ADD COLUMN managed_entry TEXT;
ALTER TABLE models ADD COLUMN spec_hash TEXT;
UPDATE models SET
    managed_entry = json_extract(config, '$.managed.entry'),
    spec_hash = json_extract(config, '$.managed.spec_hash');
CREATE INDEX models_managed_entry ON models (managed_entry);
CREATE INDEX models_source ON models (source);
CREATE INDEX models_format ON models (format);
CREATE TABLE model_tags (
    key TEXT NOT NULL REFERENCES models (key) ON DELETE CASCADE,
    tag TEXT NOT NULL,
    PRIMARY KEY (key, tag)
) WITHOUT ROWID;
CREATE INDEX model_tags_tag ON model_tags (tag);
INSERT OR IGNORE INTO model_tags (key, tag)
    SELECT models.key, t.value FROM models, json_each(models.config, '$.tags') AS t
    WHERE t.type = 'text';
CREATE TABLE model_files (
    key           TEXT NOT NULL REFERENCES models (key) ON DELETE CASCADE,
    relative_path TEXT NOT NULL,
    size          INTEGER NOT NULL,
    mtime_ns      INTEGER NOT NULL,
    sha256        TEXT,
    PRIMARY KEY (key, relative_path)
) WITHOUT ROWID;
";

/// The schema migrations, oldest first: the `n`th takes version `n` to `n + 1`.
/// Append only; never edit one that shipped.
const MIGRATION_SLICE: &[M<'static>] = &[M::up(V1), M::up(V2)];
const MIGRATIONS: Migrations<'static> = Migrations::from_slice(MIGRATION_SLICE);

/// The schema version this build creates and reads.
pub const SCHEMA_VERSION: usize = MIGRATION_SLICE.len();

/// Reads the schema version and refuses a database that is not a modelsync store or is newer
/// than this build. Only reads.
fn check_schema(conn: &Connection, path: &Path) -> Result<usize, StoreError> {
    let sql = |source| StoreError::Sqlite {
        path: path.to_path_buf(),
        source,
    };
    let wrong = |reason: String| StoreError::WrongKind {
        path: path.to_path_buf(),
        reason,
    };
    // One statement, so one snapshot: read separately, the version could come from before
    // another process's migration committed and the table count from after it.
    let (user_version, app_id, tables): (i64, i32, i64) = conn
        .query_row(
            "SELECT (SELECT user_version FROM pragma_user_version),
                    (SELECT application_id FROM pragma_application_id),
                    (SELECT count(*) FROM sqlite_schema
                     WHERE type = 'table' AND name NOT LIKE 'sqlite_%')",
            [],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        )
        .map_err(sql)?;
    if user_version == 0 {
        if tables > 0 {
            return Err(wrong(
                "an SQLite database that is not a modelsync store (it has tables but no modelsync schema version)".into(),
            ));
        }
        return Ok(0);
    }
    if app_id != APPLICATION_ID {
        return Err(wrong(format!(
            "an SQLite database that is not a modelsync store (application_id {app_id:#x}, expected {APPLICATION_ID:#x})"
        )));
    }
    match usize::try_from(user_version) {
        Ok(v) if v <= SCHEMA_VERSION => Ok(v),
        _ => Err(wrong(format!(
            "store schema version {user_version} is newer than this modelsync supports ({SCHEMA_VERSION}); upgrade modelsync"
        ))),
    }
}

/// Switches the database to WAL (persistent: once per file). The switch needs an exclusive
/// lock, and SQLite answers "busy" at once, without waiting, when waiting could deadlock
/// (two connections opening a new store at the same moment), so it is retried here until
/// [`BUSY_TIMEOUT`]. An in-memory database answers "memory", also fine.
fn set_wal(conn: &Connection, path: &Path) -> Result<(), StoreError> {
    let deadline = std::time::Instant::now() + BUSY_TIMEOUT;
    loop {
        let r = conn
            .query_row("PRAGMA journal_mode", [], |r| r.get::<_, String>(0))
            .and_then(|mode| {
                if mode.eq_ignore_ascii_case("wal") {
                    Ok(mode)
                } else {
                    conn.query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0))
                }
            });
        match r {
            Ok(_) => return Ok(()),
            Err(rusqlite::Error::SqliteFailure(e, _))
                if e.code == rusqlite::ErrorCode::DatabaseBusy
                    && std::time::Instant::now() < deadline =>
            {
                std::thread::sleep(Duration::from_millis(5));
            }
            Err(source) => {
                return Err(StoreError::Sqlite {
                    path: path.to_path_buf(),
                    source,
                });
            }
        }
    }
}

/// Brings the schema to [`SCHEMA_VERSION`] with [`rusqlite_migration`], once.
///
/// `rusqlite_migration` reads the version before it opens its migration transaction, so two
/// processes that both saw an old version would both migrate (`table models already
/// exists`). Migrators are therefore serialised by an exclusive `flock` on the database file
/// (SQLite's own locks are `fcntl` locks, which `flock` does not touch on Linux), and the
/// version is read again once the lock is held: whoever got there first has done the work,
/// and the migrations still missing (usually none) run once, in one `BEGIN IMMEDIATE`
/// transaction.
fn migrate(conn: &mut Connection, path: &Path) -> Result<(), StoreError> {
    let _guard = MigrationLock::acquire(path)?;
    let current = check_schema(conn, path)?;
    if current >= SCHEMA_VERSION {
        return Ok(());
    }
    conn.set_transaction_behavior(TransactionBehavior::Immediate);
    let migrated = MIGRATIONS
        .to_latest(conn)
        .map_err(|source| StoreError::Migration {
            path: path.to_path_buf(),
            version: SCHEMA_VERSION,
            source,
        });
    conn.set_transaction_behavior(TransactionBehavior::Deferred);
    migrated
}

/// An exclusive `flock` on the database file, held while the schema is created or migrated.
/// An in-memory database (no file) needs none.
struct MigrationLock(Option<std::fs::File>);

impl MigrationLock {
    fn acquire(path: &Path) -> Result<Self, StoreError> {
        use std::os::fd::AsRawFd;
        if path.as_os_str() == ":memory:" || !path.is_file() {
            return Ok(Self(None));
        }
        let io = |source| StoreError::Io {
            path: path.to_path_buf(),
            source,
        };
        let file = std::fs::File::open(path).map_err(io)?;
        // SAFETY: flock on a descriptor this function owns; blocking is bounded by the other
        // migrator, which holds the lock only for its transaction.
        loop {
            if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX) } == 0 {
                return Ok(Self(Some(file)));
            }
            let err = std::io::Error::last_os_error();
            if err.kind() != std::io::ErrorKind::Interrupted {
                return Err(io(err));
            }
        }
    }
}

impl Drop for MigrationLock {
    fn drop(&mut self) {
        use std::os::fd::AsRawFd;
        if let Some(file) = &self.0 {
            // SAFETY: unlocking the descriptor this guard owns; closing it would unlock too.
            unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_UN) };
        }
    }
}

/// The first 16 bytes of every SQLite 3 database file.
const SQLITE_MAGIC: &[u8; 16] = b"SQLite format 3\0";

const COLUMNS: &str = "key, config";

/// A record store in one SQLite database (WAL mode, so readers never wait for a writer).
///
/// The connection sits behind a mutex, so one `SqliteStore` can be shared by threads; several
/// stores (processes) on the same file coordinate through SQLite's own locking.
#[derive(Debug)]
pub struct SqliteStore {
    conn: Mutex<Connection>,
    path: PathBuf,
}

impl SqliteStore {
    /// Opens the database at `path`, creating and initialising it (and its folder) when
    /// missing, migrating an older schema. Refuses, without writing to it, a file that is not
    /// SQLite, a database that is not a modelsync store, or a newer schema.
    pub fn from_db_file(path: &Path) -> Result<Self, StoreError> {
        check_header(path)?;
        if super::on_read_only_fs(path) {
            // SQLite would open it read-only without a word and fail later with "unable to
            // open database file".
            return Err(StoreError::ReadOnly {
                path: path.to_path_buf(),
            });
        }
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty())
            && !parent.exists()
        {
            std::fs::create_dir_all(parent).map_err(|source| StoreError::Io {
                path: parent.to_path_buf(),
                source,
            })?;
        }
        let conn = Connection::open(path).map_err(|source| StoreError::Sqlite {
            path: path.to_path_buf(),
            source,
        })?;
        Self::init(conn, path.to_path_buf())
    }

    /// Opens an existing store for reading only: `mode=ro`, or, when SQLite cannot make the
    /// WAL index it needs beside the file (a read-only file system), `immutable=1`. Immutable
    /// reads assume nobody writes meanwhile and do not see a `-wal` file's frames: on a
    /// read-only mount nobody can write, and a store closed cleanly has its WAL checkpointed
    /// into the file. Never creates, migrates or writes; an older schema is refused.
    pub fn open_read_only(path: &Path) -> Result<Self, StoreError> {
        use rusqlite::OpenFlags;
        check_header(path)?;
        let sql = |source| StoreError::Sqlite {
            path: path.to_path_buf(),
            source,
        };
        let flags = OpenFlags::SQLITE_OPEN_READ_ONLY
            | OpenFlags::SQLITE_OPEN_URI
            | OpenFlags::SQLITE_OPEN_NO_MUTEX;
        // SQLite URI file names: `%`, `?` and `#` must be percent-encoded.
        let uri = |query: &str| {
            let mut u = String::from("file:");
            for c in path.to_string_lossy().chars() {
                match c {
                    '%' => u.push_str("%25"),
                    '?' => u.push_str("%3F"),
                    '#' => u.push_str("%23"),
                    _ => u.push(c),
                }
            }
            format!("{u}?{query}")
        };
        let try_open = |query: &str| -> Result<(Connection, usize), StoreError> {
            let conn = Connection::open_with_flags(uri(query), flags).map_err(sql)?;
            conn.busy_timeout(BUSY_TIMEOUT).map_err(sql)?;
            let v = check_schema(&conn, path)?;
            Ok((conn, v))
        };
        let (conn, version) = match try_open("mode=ro") {
            Ok(c) => c,
            Err(StoreError::Sqlite { .. }) if super::on_read_only_fs(path) => {
                try_open("immutable=1")?
            }
            Err(e) => return Err(e),
        };
        if version < SCHEMA_VERSION {
            if !super::on_read_only_fs(path) {
                // Where it can be, an old store is upgraded, as any command would.
                drop(conn);
                return Self::from_db_file(path);
            }
            return Err(StoreError::WrongKind {
                path: path.to_path_buf(),
                reason: format!(
                    "store schema version {version} is older than this modelsync's ({SCHEMA_VERSION}); upgrade it where it is writable (any command does)"
                ),
            });
        }
        Ok(Self {
            conn: Mutex::new(conn),
            path: path.to_path_buf(),
        })
    }

    /// Uses an already opened connection (the seed's `from_connection`), for keeping the
    /// records inside an application's own database. Same checks and migrations as
    /// [`SqliteStore::from_db_file`].
    pub fn from_connection(conn: Connection) -> Result<Self, StoreError> {
        let path = match conn.path() {
            Some(p) if !p.is_empty() => PathBuf::from(p),
            _ => PathBuf::from(":memory:"),
        };
        Self::init(conn, path)
    }

    /// The schema version recorded in the database.
    pub fn schema_version(&self) -> Result<usize, StoreError> {
        let conn = self.conn();
        let v: i64 = conn
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .map_err(|e| self.sql(e))?;
        Ok(usize::try_from(v).unwrap_or(0))
    }

    fn init(mut conn: Connection, path: PathBuf) -> Result<Self, StoreError> {
        let sql = |source| StoreError::Sqlite {
            path: path.clone(),
            source,
        };
        conn.busy_timeout(BUSY_TIMEOUT).map_err(sql)?;
        conn.pragma_update(None, "foreign_keys", true)
            .map_err(sql)?;

        // Everything up to the migration only reads, so a refused file stays as it was.
        let version = check_schema(&conn, &path)?;
        set_wal(&conn, &path)?;
        if version < SCHEMA_VERSION {
            migrate(&mut conn, &path)?;
        }
        conn.pragma_update(None, "synchronous", "NORMAL")
            .map_err(sql)?;
        Ok(Self {
            conn: Mutex::new(conn),
            path,
        })
    }

    fn conn(&self) -> MutexGuard<'_, Connection> {
        // A panic while holding the guard cannot leave a half-done write behind: every write
        // is one SQLite transaction, rolled back when its guard drops.
        self.conn.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn sql(&self, source: rusqlite::Error) -> StoreError {
        if let rusqlite::Error::SqliteFailure(e, _) = &source
            && matches!(
                e.code,
                rusqlite::ErrorCode::ReadOnly | rusqlite::ErrorCode::CannotOpen
            )
            && super::on_read_only_fs(&self.path)
        {
            return StoreError::ReadOnly {
                path: self.path.clone(),
            };
        }
        StoreError::Sqlite {
            path: self.path.clone(),
            source,
        }
    }

    fn decode(&self, key: String, json: &str) -> Result<AnyModelConfig, StoreError> {
        serde_json::from_str::<serde_json::Value>(json)
            .map_err(|e| e.to_string())
            .and_then(|v| AnyModelConfig::from_json(v).map_err(|e| e.to_string()))
            .map_err(|reason| StoreError::CorruptRecord {
                path: self.path.clone(),
                key,
                reason,
            })
    }

    fn query(
        &self,
        conn: &Connection,
        sql: &str,
        params: impl rusqlite::Params,
    ) -> Result<Vec<AnyModelConfig>, StoreError> {
        let mut stmt = conn.prepare_cached(sql).map_err(|e| self.sql(e))?;
        let rows = stmt
            .query_map(params, |r| {
                Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?))
            })
            .map_err(|e| self.sql(e))?;
        let mut out = Vec::new();
        for row in rows {
            let (key, json) = row.map_err(|e| self.sql(e))?;
            out.push(self.decode(key, &json)?);
        }
        Ok(out)
    }

    fn load(&self, conn: &Connection, key: &str) -> Result<AnyModelConfig, StoreError> {
        let row: Option<(String, String)> = conn
            .query_row(
                &format!("SELECT {COLUMNS} FROM models WHERE key = ?1"),
                [key],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()
            .map_err(|e| self.sql(e))?;
        match row {
            Some((k, json)) => self.decode(k, &json),
            None => Err(StoreError::UnknownModel(format!(
                "no model with key `{key}`"
            ))),
        }
    }

    /// `DuplicateModel` when another record than `key` already uses `path`.
    fn check_path_free(&self, conn: &Connection, key: &str, path: &str) -> Result<(), StoreError> {
        let other: Option<(String, String)> = conn
            .query_row(
                "SELECT key, name FROM models WHERE path = ?1 AND key <> ?2",
                [path, key],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()
            .map_err(|e| self.sql(e))?;
        match other {
            Some((k, name)) => Err(StoreError::DuplicateModel(format!(
                "path `{path}` is already used by model `{name}` ({k})"
            ))),
            None => Ok(()),
        }
    }

    /// Writes the row and the tags of `config` (insert or replace).
    fn write(&self, conn: &Connection, config: &AnyModelConfig) -> Result<(), StoreError> {
        let c = config.common();
        let json = config.to_json().to_string();
        let (entry, spec) = c
            .managed
            .as_ref()
            .map_or((None, None), |m| (Some(&m.entry), Some(&m.spec_hash)));
        conn.execute(
            "INSERT INTO models (key, name, type, base, format, path, hash, source, config, managed_entry, spec_hash)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)
             ON CONFLICT (key) DO UPDATE SET
                name = excluded.name, type = excluded.type, base = excluded.base,
                format = excluded.format, path = excluded.path, hash = excluded.hash,
                source = excluded.source, config = excluded.config,
                managed_entry = excluded.managed_entry, spec_hash = excluded.spec_hash",
            params![
                c.key,
                c.name,
                config.model_type().as_str(),
                c.base.as_str(),
                config.format().as_str(),
                c.path,
                c.hash,
                c.source,
                json,
                entry,
                spec
            ],
        )
        .map_err(|e| self.sql(e))?;
        conn.execute("DELETE FROM model_tags WHERE key = ?1", [&c.key])
            .map_err(|e| self.sql(e))?;
        let mut stmt = conn
            .prepare_cached("INSERT OR IGNORE INTO model_tags (key, tag) VALUES (?1, ?2)")
            .map_err(|e| self.sql(e))?;
        for tag in &c.tags {
            stmt.execute([&c.key, tag]).map_err(|e| self.sql(e))?;
        }
        Ok(())
    }

    fn begin<'c>(&self, conn: &'c mut Connection) -> Result<rusqlite::Transaction<'c>, StoreError> {
        // IMMEDIATE takes the write lock up front, so the duplicate checks and the write see
        // the same database even with other processes writing.
        conn.transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(|e| self.sql(e))
    }
}

/// Refuses an existing, non-empty file that does not start with SQLite's magic bytes, before
/// SQLite gets to open (and possibly write) it.
fn check_header(path: &Path) -> Result<(), StoreError> {
    let mut file = match std::fs::File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(source) => {
            return Err(StoreError::Io {
                path: path.to_path_buf(),
                source,
            });
        }
    };
    let mut head = Vec::with_capacity(16);
    file.by_ref()
        .take(16)
        .read_to_end(&mut head)
        .map_err(|source| StoreError::Io {
            path: path.to_path_buf(),
            source,
        })?;
    if head.is_empty() || head == SQLITE_MAGIC {
        return Ok(());
    }
    let looks_yaml = head.iter().all(|b| b.is_ascii() && *b != 0);
    Err(StoreError::WrongKind {
        path: path.to_path_buf(),
        reason: if looks_yaml {
            "not an SQLite database (it looks like text; a YAML store needs a .yaml/.yml name)"
                .into()
        } else {
            "not an SQLite database".into()
        },
    })
}

impl RecordStore for SqliteStore {
    fn add_model(
        &self,
        key: &str,
        mut config: AnyModelConfig,
    ) -> Result<AnyModelConfig, StoreError> {
        if key.is_empty() {
            return Err(InvalidModelConfig::Missing("key").into());
        }
        key.clone_into(&mut config.common_mut().key);
        let mut conn = self.conn();
        let tx = self.begin(&mut conn)?;
        let taken: bool = tx
            .query_row(
                "SELECT EXISTS (SELECT 1 FROM models WHERE key = ?1)",
                [key],
                |r| r.get(0),
            )
            .map_err(|e| self.sql(e))?;
        if taken {
            return Err(StoreError::DuplicateModel(format!(
                "a model with key `{key}` already exists"
            )));
        }
        self.check_path_free(&tx, key, config.path())?;
        self.write(&tx, &config)?;
        tx.commit().map_err(|e| self.sql(e))?;
        Ok(config)
    }

    fn update_model(&self, key: &str, change: ConfigChange) -> Result<AnyModelConfig, StoreError> {
        let mut conn = self.conn();
        let tx = self.begin(&mut conn)?;
        let old = self.load(&tx, key)?;
        let new = apply_change(&old, change)?;
        self.check_path_free(&tx, key, new.path())?;
        self.write(&tx, &new)?;
        tx.commit().map_err(|e| self.sql(e))?;
        Ok(new)
    }

    fn del_model(&self, key: &str) -> Result<(), StoreError> {
        let conn = self.conn();
        let n = conn
            .execute("DELETE FROM models WHERE key = ?1", [key])
            .map_err(|e| self.sql(e))?;
        if n == 0 {
            return Err(StoreError::UnknownModel(format!(
                "no model with key `{key}`"
            )));
        }
        Ok(())
    }

    fn get_model(&self, key: &str) -> Result<AnyModelConfig, StoreError> {
        let conn = self.conn();
        self.load(&conn, key)
    }

    fn exists(&self, key: &str) -> Result<bool, StoreError> {
        let conn = self.conn();
        conn.query_row(
            "SELECT EXISTS (SELECT 1 FROM models WHERE key = ?1)",
            [key],
            |r| r.get(0),
        )
        .map_err(|e| self.sql(e))
    }

    fn search_by_path(&self, path: &str) -> Result<Vec<AnyModelConfig>, StoreError> {
        let conn = self.conn();
        self.query(
            &conn,
            &format!("SELECT {COLUMNS} FROM models WHERE path = ?1 ORDER BY name, key"),
            [path],
        )
    }

    fn search_by_name(
        &self,
        name: Option<&str>,
        base: Option<BaseModelType>,
        model_type: Option<ModelType>,
    ) -> Result<Vec<AnyModelConfig>, StoreError> {
        let conn = self.conn();
        // NULL parameters disable their criterion, so one cached statement serves every combination.
        self.query(
            &conn,
            &format!(
                "SELECT {COLUMNS} FROM models
                 WHERE (?1 IS NULL OR name = ?1) AND (?2 IS NULL OR base = ?2) AND (?3 IS NULL OR type = ?3)
                 ORDER BY name, key"
            ),
            params![name, base.map(BaseModelType::as_str), model_type.map(ModelType::as_str)],
        )
    }

    fn search_by_tag(&self, tags: &[String]) -> Result<Vec<AnyModelConfig>, StoreError> {
        let mut wanted: Vec<&str> = tags.iter().map(String::as_str).collect();
        wanted.sort_unstable();
        wanted.dedup();
        if wanted.is_empty() {
            return self.all_models();
        }
        let conn = self.conn();
        let json = serde_json::Value::from(wanted.clone()).to_string();
        self.query(
            &conn,
            &format!(
                "SELECT {COLUMNS} FROM models WHERE key IN (
                     SELECT key FROM model_tags WHERE tag IN (SELECT value FROM json_each(?1))
                     GROUP BY key HAVING count(*) = ?2)
                 ORDER BY name, key"
            ),
            params![json, i64::try_from(wanted.len()).unwrap_or(i64::MAX)],
        )
    }

    fn search_by_hash(&self, hash: &str) -> Result<Vec<AnyModelConfig>, StoreError> {
        let conn = self.conn();
        self.query(
            &conn,
            &format!("SELECT {COLUMNS} FROM models WHERE hash = ?1 ORDER BY name, key"),
            [hash],
        )
    }

    fn search_scope(
        &self,
        entries: &[&str],
        sources: &[&str],
    ) -> Result<Vec<AnyModelConfig>, StoreError> {
        // One indexed look-up per name (`models_managed_entry`, `models_source`).
        let conn = self.conn();
        let mut out = Vec::new();
        for e in entries {
            out.extend(self.query(
                &conn,
                &format!("SELECT {COLUMNS} FROM models WHERE managed_entry = ?1"),
                [e],
            )?);
        }
        for s in sources {
            out.extend(self.query(
                &conn,
                &format!(
                    "SELECT {COLUMNS} FROM models WHERE source = ?1 AND managed_entry IS NULL"
                ),
                [s],
            )?);
        }
        out.sort_by(|a, b| (a.name(), a.key()).cmp(&(b.name(), b.key())));
        out.dedup_by(|a, b| a.key() == b.key());
        Ok(out)
    }

    fn set_model_files(&self, key: &str, files: &[ModelFile]) -> Result<(), StoreError> {
        let mut conn = self.conn();
        let tx = self.begin(&mut conn)?;
        let known: bool = tx
            .query_row(
                "SELECT EXISTS (SELECT 1 FROM models WHERE key = ?1)",
                [key],
                |r| r.get(0),
            )
            .map_err(|e| self.sql(e))?;
        if !known {
            return Err(StoreError::UnknownModel(format!(
                "no model with key `{key}`"
            )));
        }
        tx.execute("DELETE FROM model_files WHERE key = ?1", [key])
            .map_err(|e| self.sql(e))?;
        {
            let mut stmt = tx
                .prepare_cached(
                    "INSERT OR REPLACE INTO model_files (key, relative_path, size, mtime_ns, sha256)
                     VALUES (?1, ?2, ?3, ?4, ?5)",
                )
                .map_err(|e| self.sql(e))?;
            for f in files {
                let size = i64::try_from(f.size)
                    .map_err(|e| self.sql(rusqlite::Error::ToSqlConversionFailure(Box::new(e))))?;
                let mtime = i64::try_from(f.mtime_ns)
                    .map_err(|e| self.sql(rusqlite::Error::ToSqlConversionFailure(Box::new(e))))?;
                stmt.execute(params![key, f.relative_path, size, mtime, f.sha256])
                    .map_err(|e| self.sql(e))?;
            }
        }
        tx.commit().map_err(|e| self.sql(e))
    }

    fn model_files(&self, key: &str) -> Result<Vec<ModelFile>, StoreError> {
        let conn = self.conn();
        let mut stmt = conn
            .prepare_cached(
                "SELECT relative_path, size, mtime_ns, sha256 FROM model_files
                 WHERE key = ?1 ORDER BY relative_path",
            )
            .map_err(|e| self.sql(e))?;
        let rows = stmt
            .query_map([key], |r| file_row(r, 0))
            .map_err(|e| self.sql(e))?;
        rows.collect::<Result<Vec<_>, _>>().map_err(|e| self.sql(e))
    }

    fn files_by_sha256(&self, sha256: &[&str]) -> Result<Vec<(String, ModelFile)>, StoreError> {
        if sha256.is_empty() {
            return Ok(Vec::new());
        }
        let wanted: Vec<String> = sha256.iter().map(|h| h.to_ascii_lowercase()).collect();
        let wanted = serde_json::Value::from(wanted).to_string();
        let conn = self.conn();
        // One pass over the fingerprints in SQLite (no record is decoded, no file looked at).
        let mut stmt = conn
            .prepare_cached(
                "SELECT key, relative_path, size, mtime_ns, sha256 FROM model_files
                 WHERE lower(sha256) IN (SELECT value FROM json_each(?1))
                 ORDER BY key, relative_path",
            )
            .map_err(|e| self.sql(e))?;
        let rows = stmt
            .query_map([wanted], |r| Ok((r.get::<_, String>(0)?, file_row(r, 1)?)))
            .map_err(|e| self.sql(e))?;
        rows.collect::<Result<Vec<_>, _>>().map_err(|e| self.sql(e))
    }

    fn location(&self) -> &Path {
        &self.path
    }
}

/// A `model_files` row's `relative_path, size, mtime_ns, sha256`, from column `at` on.
fn file_row(r: &rusqlite::Row<'_>, at: usize) -> rusqlite::Result<ModelFile> {
    Ok(ModelFile {
        relative_path: r.get(at)?,
        size: u64::try_from(r.get::<_, i64>(at + 1)?).unwrap_or(0),
        mtime_ns: i128::from(r.get::<_, i64>(at + 2)?),
        sha256: r.get(at + 3)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn read_only_open_takes_uri_characters_in_the_path_and_refuses_writes() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a?b#c%20d.db");
        drop(SqliteStore::from_db_file(&path).unwrap());
        let ro = SqliteStore::open_read_only(&path).unwrap();
        assert_eq!(ro.schema_version().unwrap(), SCHEMA_VERSION);
        assert!(ro.all_models().unwrap().is_empty());
        assert!(ro.del_model("nope").is_err());
        // Nothing new appeared beside it (no file named after a mangled URI).
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| !n.starts_with("a?b#c%20d.db"))
            .collect();
        assert!(names.is_empty(), "{names:?}");
        // A file that does not exist is not created by a read-only open.
        let missing = dir.path().join("none.db");
        assert!(SqliteStore::open_read_only(&missing).is_err());
        assert!(!missing.exists());
    }
}
