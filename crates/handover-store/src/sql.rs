//! SQLite and PostgreSQL: reads through sqlx's `Any` driver on both, writes through it on
//! PostgreSQL and through the writer's own connection on SQLite (the same statements in
//! SQLite's dialect, in `sqlite.rs`); two schemas.
//!
//! Every write that must be atomic is one transaction. The version check and the fencing
//! check are one `UPDATE … WHERE version = ? AND fencing = ?` on the handover's row, and the
//! lease lives in that row, so a takeover and a stale holder's write serialize on the same
//! row lock (PostgreSQL) or the database lock (SQLite). On PostgreSQL, an appended input is
//! announced with `NOTIFY handover_inbox` so the lease holder wakes at once.
//!
//! On PostgreSQL every write is its own transaction on the pool ([`SqlStore::write`]). On
//! SQLite every write is a job for the one writer's thread, which commits the jobs queued
//! together in one transaction (see [`crate::writer`] and [`crate::sqlite`]). Reads use the
//! pool on both.

use std::borrow::Cow;
use std::future::Future;
use std::str::FromStr;
use std::time::Duration;

use async_trait::async_trait;
use handover_core::ports::{
    BotAddress, Commit, FencingToken, Lease, SessionStore, StoreError, StoredHandover, Version,
};
use handover_core::{
    Admission, Command, HandoverId, Input, Phase, RequestId, Session, StartGate, Timestamp,
};
use sqlx::any::{AnyPoolOptions, AnyRow};
use sqlx::migrate::{Migration, MigrationType, Migrator};
use sqlx::{AnyConnection, AnyPool, Row};

use crate::codec::{Codec, Kind};
use crate::crypto::Keyring;
use crate::sqlite::{self, Committed, NewHandover};
use crate::writer::Writer;

/// A future that borrows the connection it runs on.
type ConnFuture<'c, T> = std::pin::Pin<Box<dyn Future<Output = T> + Send + 'c>>;
use crate::{Summary, SummaryFilter, call_of, gate_key};

/// Which database.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SqlBackend {
    /// SQLite: one file, WAL mode; one instance.
    Sqlite,
    /// PostgreSQL: several instances.
    Postgres,
}

/// The channel appended inputs are announced on (PostgreSQL).
pub const INBOX_CHANNEL: &str = "handover_inbox";

/// The migrations, embedded: `(version, description, SQLite, PostgreSQL)`. Never edit one that
/// has shipped; add the next.
const MIGRATIONS: &[(i64, &str, &str, &str)] = &[
    (
        1,
        "handovers",
        include_str!("../migrations/sqlite/0001_handovers.sql"),
        include_str!("../migrations/postgres/0001_handovers.sql"),
    ),
    (
        2,
        "pacing",
        include_str!("../migrations/sqlite/0002_pacing.sql"),
        include_str!("../migrations/postgres/0002_pacing.sql"),
    ),
];

/// A store on SQLite or PostgreSQL.
#[derive(Clone)]
pub struct SqlStore {
    /// Reads on both backends; writes on PostgreSQL.
    pool: AnyPool,
    /// SQLite's one writer, with group commit.
    writer: Option<Writer>,
    backend: SqlBackend,
    url: String,
    codec: Codec,
}

impl std::fmt::Debug for SqlStore {
    // The URL may carry a password.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqlStore")
            .field("backend", &self.backend)
            .finish_non_exhaustive()
    }
}

fn unavailable(error: sqlx::Error) -> StoreError {
    // sqlx errors name statements and values bound never, connection URLs sometimes: keep
    // the kind only for connection errors.
    if let sqlx::Error::Configuration(_) = error {
        return StoreError::Unavailable("bad database configuration".to_owned());
    }
    if let sqlx::Error::Io(io) = &error {
        return StoreError::Unavailable(format!("database I/O: {}", io.kind()));
    }
    StoreError::Unavailable(error.to_string())
}

fn id_of(row: &AnyRow, column: &str) -> Result<HandoverId, StoreError> {
    let text: String = row.try_get(column).map_err(unavailable)?;
    HandoverId::parse(&text)
        .map_err(|_| StoreError::Corrupt(format!("a stored handover id is not a UUID: {text}")))
}

fn millis(at: Timestamp) -> i64 {
    i64::try_from(at.as_unix_millis()).unwrap_or(i64::MAX)
}

fn int(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

fn uint(value: i64) -> u64 {
    u64::try_from(value).unwrap_or(0)
}

impl SqlStore {
    /// Connects to `url` (`sqlite://path` or `postgres://…`), applies the migrations, and
    /// seals with `keys`. A SQLite file is created if missing and switched to WAL mode.
    pub async fn connect(url: &str, keys: Keyring) -> Result<Self, StoreError> {
        sqlx::any::install_default_drivers();
        let backend: SqlBackend = url.parse()?;
        if backend == SqlBackend::Sqlite
            && (sqlite_path(url).as_os_str() == ":memory:" || url.contains("mode=memory"))
        {
            // The writer's connection would open a database of its own.
            return Err(StoreError::Unavailable(
                "an in-memory SQLite database is not supported; use a file, or the memory store"
                    .to_owned(),
            ));
        }
        let mut connect_url = url.to_owned();
        if backend == SqlBackend::Sqlite && !connect_url.contains("mode=") {
            connect_url.push_str(if connect_url.contains('?') {
                "&mode=rwc"
            } else {
                "?mode=rwc"
            });
        }
        let pool = AnyPoolOptions::new()
            .max_connections(if backend == SqlBackend::Sqlite { 4 } else { 16 })
            .acquire_timeout(Duration::from_secs(10))
            .connect(&connect_url)
            .await
            .map_err(unavailable)?;
        if backend == SqlBackend::Sqlite {
            sqlx::query("PRAGMA journal_mode = WAL")
                .execute(&pool)
                .await
                .map_err(unavailable)?;
        }
        let mut store = Self {
            pool,
            writer: None,
            backend,
            url: url.to_owned(),
            codec: Codec::new(keys),
        };
        store.migrate().await?;
        if backend == SqlBackend::Sqlite {
            store.writer = Some(Writer::start(sqlite_path(url))?);
        }
        Ok(store)
    }

    /// Runs `work` as one transaction on the pool (PostgreSQL): an `Err` from it rolls its
    /// statements back.
    async fn write<T, F>(&self, work: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: for<'c> FnOnce(&'c mut AnyConnection) -> ConnFuture<'c, Result<T, StoreError>>
            + Send
            + 'static,
    {
        let mut tx = self.pool.begin().await.map_err(unavailable)?;
        let result = work(&mut tx).await;
        if result.is_ok() {
            tx.commit().await.map_err(unavailable)?;
        }
        result
    }

    /// Which database this is.
    pub fn backend(&self) -> SqlBackend {
        self.backend
    }

    async fn migrate(&self) -> Result<(), StoreError> {
        let migrations = MIGRATIONS
            .iter()
            .map(|(version, description, sqlite, postgres)| {
                let sql = match self.backend {
                    SqlBackend::Sqlite => sqlite,
                    SqlBackend::Postgres => postgres,
                };
                Migration::new(
                    *version,
                    Cow::Borrowed(*description),
                    MigrationType::Simple,
                    Cow::Borrowed(*sql),
                    false,
                )
            })
            .collect::<Vec<_>>();
        let migrator = Migrator {
            migrations: Cow::Owned(migrations),
            ignore_missing: false,
            locking: true,
            no_tx: false,
        };
        migrator
            .run(&self.pool)
            .await
            .map_err(|error| StoreError::Unavailable(format!("migrating the database: {error}")))
    }

    /// Books the next free slot of `key`, at least `interval` after the slot booked before it
    /// by any instance, and returns how long to wait for it (zero if the key was idle). One
    /// row per key, updated in one statement, so concurrent bookings serialize on its lock.
    /// PostgreSQL's clock decides, so instances with skewed clocks still space their slots
    /// evenly; SQLite (one instance) uses this process's clock. The clock is read as the
    /// booking runs (`clock_timestamp()`, not the statement's start), so a booking that waited
    /// for another's lock measures its wait from the moment it got it, never from before the
    /// slot it follows was booked.
    pub async fn reserve_slot(
        &self,
        key: &str,
        interval: Duration,
    ) -> Result<Duration, StoreError> {
        let interval = i64::try_from(interval.as_millis()).unwrap_or(i64::MAX / 4);
        let wait: i64 = match self.backend {
            SqlBackend::Postgres => {
                let row = sqlx::query(
                    "INSERT INTO pacing (key, next_at) \
                     VALUES ($1, CAST(FLOOR(EXTRACT(EPOCH FROM clock_timestamp()) * 1000) AS BIGINT) + $2) \
                     ON CONFLICT (key) DO UPDATE \
                     SET next_at = GREATEST(pacing.next_at + $2, EXCLUDED.next_at) \
                     RETURNING next_at - $2 - CAST(FLOOR(EXTRACT(EPOCH FROM clock_timestamp()) * 1000) AS BIGINT) AS wait",
                )
                .bind(key)
                .bind(interval)
                .fetch_one(&self.pool)
                .await
                .map_err(unavailable)?;
                row.try_get("wait").map_err(unavailable)?
            }
            SqlBackend::Sqlite => {
                let Some(writer) = &self.writer else {
                    return Err(StoreError::Unavailable(
                        "the SQLite writer is missing".to_owned(),
                    ));
                };
                let key = key.to_owned();
                writer
                    .write(move |conn| {
                        // Read on the writer's thread, as the booking runs: jobs run one at a
                        // time, so a later booking never holds an earlier moment.
                        let now = std::time::SystemTime::now()
                            .duration_since(std::time::UNIX_EPOCH)
                            .map_or(0, |since| {
                                i64::try_from(since.as_millis()).unwrap_or(i64::MAX / 4)
                            });
                        let next_at = sqlite::reserve_slot(conn, &key, now, interval)?;
                        Ok(next_at - interval - now)
                    })
                    .await?
            }
        };
        Ok(Duration::from_millis(uint(wait)))
    }

    /// Handovers, newest first, with what a list shows.
    pub async fn summaries(&self, filter: &SummaryFilter) -> Result<Vec<Summary>, StoreError> {
        let live = match filter.live {
            None => "",
            Some(true) => " AND ended_at IS NULL",
            Some(false) => " AND ended_at IS NOT NULL",
        };
        let rows = sqlx::query(&format!(
            "SELECT id, user_id, session_id, session FROM handovers \
             WHERE ($1 IS NULL OR user_id = $1) AND ($2 IS NULL OR session_id = $2){live} \
             ORDER BY created_at DESC, id LIMIT $3"
        ))
        .bind(filter.user_id.clone())
        .bind(filter.session_id.clone())
        .bind(int(filter.limit as u64))
        .fetch_all(&self.pool)
        .await
        .map_err(unavailable)?;
        rows.iter()
            .map(|row| {
                let id = id_of(row, "id")?;
                let sealed: Vec<u8> = row.try_get("session").map_err(unavailable)?;
                let session: Session = self.codec.open(id, Kind::Session, &sealed)?;
                Ok(Summary::of(
                    &session,
                    row.try_get("user_id").map_err(unavailable)?,
                    row.try_get("session_id").map_err(unavailable)?,
                ))
            })
            .collect()
    }

    /// Every sealed or plain value in the tables, as raw bytes, for tests that look for
    /// secrets in plain text.
    pub async fn raw_values(&self) -> Result<Vec<Vec<u8>>, StoreError> {
        let mut values = Vec::new();
        for (table, columns) in [
            ("handovers", "id, user_id, session_id, session, address"),
            ("outbox", "handover_id, command"),
            ("inbox", "handover_id, input"),
            ("gates", "user_id, session_id, gate"),
        ] {
            let rows = sqlx::query(&format!("SELECT {columns} FROM {table}"))
                .fetch_all(&self.pool)
                .await
                .map_err(unavailable)?;
            for row in rows {
                for index in 0..row.len() {
                    if let Ok(bytes) = row.try_get::<Vec<u8>, _>(index) {
                        values.push(bytes);
                    } else if let Ok(text) = row.try_get::<String, _>(index) {
                        values.push(text.into_bytes());
                    }
                }
            }
        }
        Ok(values)
    }

    /// On PostgreSQL, a listener that yields the handover of every appended input, from any
    /// instance. `None` on SQLite, where one instance appends and drives.
    pub async fn inbox_listener(&self) -> Result<Option<InboxListener>, StoreError> {
        if self.backend != SqlBackend::Postgres {
            return Ok(None);
        }
        let mut listener = sqlx::postgres::PgListener::connect(&self.url)
            .await
            .map_err(unavailable)?;
        listener.listen(INBOX_CHANNEL).await.map_err(unavailable)?;
        Ok(Some(InboxListener { listener }))
    }
}

/// The start gate of a Cognigy session, created empty if missing, locked for the rest of the
/// transaction on PostgreSQL.
async fn gate(
    conn: &mut AnyConnection,
    backend: SqlBackend,
    key: &(String, String),
) -> Result<StartGate, StoreError> {
    let empty = serde_json::to_string(&StartGate::default())
        .map_err(|_| StoreError::Corrupt("the start gate could not be written".to_owned()))?;
    sqlx::query(
        "INSERT INTO gates (user_id, session_id, gate) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING",
    )
    .bind(&key.0)
    .bind(&key.1)
    .bind(empty)
    .execute(&mut *conn)
    .await
    .map_err(unavailable)?;
    let for_update = match backend {
        SqlBackend::Sqlite => "",
        SqlBackend::Postgres => " FOR UPDATE",
    };
    let row = sqlx::query(&format!(
        "SELECT gate FROM gates WHERE user_id = $1 AND session_id = $2{for_update}"
    ))
    .bind(&key.0)
    .bind(&key.1)
    .fetch_one(&mut *conn)
    .await
    .map_err(unavailable)?;
    let text: String = row.try_get("gate").map_err(unavailable)?;
    serde_json::from_str(&text)
        .map_err(|_| StoreError::Corrupt("a start gate is not readable by this version".to_owned()))
}

async fn save_gate(
    conn: &mut AnyConnection,
    key: &(String, String),
    gate: &StartGate,
) -> Result<(), StoreError> {
    let text = serde_json::to_string(gate)
        .map_err(|_| StoreError::Corrupt("the start gate could not be written".to_owned()))?;
    sqlx::query("UPDATE gates SET gate = $1 WHERE user_id = $2 AND session_id = $3")
        .bind(text)
        .bind(&key.0)
        .bind(&key.1)
        .execute(&mut *conn)
        .await
        .map_err(unavailable)?;
    Ok(())
}

/// Why a conditional update of a handover's row touched nothing, read in the same
/// transaction.
async fn refusal(
    conn: &mut AnyConnection,
    id: HandoverId,
    expected: Version,
    fencing: FencingToken,
) -> StoreError {
    let row = sqlx::query("SELECT version, fencing FROM handovers WHERE id = $1")
        .bind(id.to_string())
        .fetch_optional(&mut *conn)
        .await;
    match row {
        Ok(row) => sqlite::refusal_of(
            id,
            row.map(|row| {
                (
                    row.try_get("version").unwrap_or_default(),
                    row.try_get("fencing").unwrap_or_default(),
                )
            }),
            expected,
            fencing,
        ),
        Err(error) => unavailable(error),
    }
}

/// Inputs appended anywhere, as they happen (PostgreSQL `LISTEN`).
#[derive(Debug)]
pub struct InboxListener {
    listener: sqlx::postgres::PgListener,
}

impl InboxListener {
    /// The next handover that got an input. After a dropped connection the listener
    /// reconnects by itself; inputs announced meanwhile are found by the holder's own reads.
    pub async fn next(&mut self) -> Result<HandoverId, StoreError> {
        loop {
            let notification = self.listener.recv().await.map_err(unavailable)?;
            if let Ok(id) = HandoverId::parse(notification.payload()) {
                return Ok(id);
            }
        }
    }
}

#[async_trait]
impl SessionStore for SqlStore {
    async fn admit(
        &self,
        request: &RequestId,
        session: &Session,
        address: &BotAddress,
        now: Timestamp,
    ) -> Result<Admission, StoreError> {
        let id = session.handover_id();
        let sealed_session = self.codec.seal(id, Kind::Session, session)?;
        let sealed_address = self.codec.seal(id, Kind::Address, address)?;
        let key = gate_key(address);
        let request = request.clone();
        let backend = self.backend;
        let ended_at = (session.phase() == Phase::Ended).then_some(millis(now));
        let finished_at = session.is_finished().then_some(millis(now));
        if let Some(writer) = &self.writer {
            let new = NewHandover {
                id,
                key,
                request,
                session: sealed_session,
                address: sealed_address,
                created_at: millis(now),
                ended_at,
                finished_at,
            };
            return writer.write(move |conn| sqlite::admit(conn, new)).await;
        }
        self.write(move |conn| {
            Box::pin(async move {
                let mut gate = gate(conn, backend, &key).await?;
                if let Some(live) = gate.live() {
                    let row = sqlx::query("SELECT ended_at FROM handovers WHERE id = $1")
                        .bind(live.to_string())
                        .fetch_optional(&mut *conn)
                        .await
                        .map_err(unavailable)?;
                    let ended = match row {
                        None => true,
                        Some(row) => row
                            .try_get::<Option<i64>, _>("ended_at")
                            .map_err(unavailable)?
                            .is_some(),
                    };
                    if ended {
                        gate.ended(live);
                    }
                }
                let admission = gate.admit(request, id);
                if admission == Admission::Started(id) {
                    sqlx::query(
                        "INSERT INTO handovers (id, user_id, session_id, session, address, version, created_at, ended_at, finished_at) \
                         VALUES ($1, $2, $3, $4, $5, 1, $6, $7, $8)",
                    )
                    .bind(id.to_string())
                    .bind(&key.0)
                    .bind(&key.1)
                    .bind(sealed_session)
                    .bind(sealed_address)
                    .bind(millis(now))
                    .bind(ended_at)
                    .bind(finished_at)
                    .execute(&mut *conn)
                    .await
                    .map_err(unavailable)?;
                }
                save_gate(conn, &key, &gate).await?;
                Ok(admission)
            })
        })
        .await
    }

    async fn load(&self, id: HandoverId) -> Result<Option<StoredHandover>, StoreError> {
        let row = sqlx::query("SELECT session, address, version FROM handovers WHERE id = $1")
            .bind(id.to_string())
            .fetch_optional(&self.pool)
            .await
            .map_err(unavailable)?;
        let Some(row) = row else {
            return Ok(None);
        };
        let session: Vec<u8> = row.try_get("session").map_err(unavailable)?;
        let address: Vec<u8> = row.try_get("address").map_err(unavailable)?;
        let version: i64 = row.try_get("version").map_err(unavailable)?;
        Ok(Some(StoredHandover {
            session: self.codec.open(id, Kind::Session, &session)?,
            address: self.codec.open(id, Kind::Address, &address)?,
            version: Version(uint(version)),
        }))
    }

    async fn commit(&self, commit: Commit<'_>) -> Result<Version, StoreError> {
        let id = commit.session.handover_id();
        let key = id.to_string();
        let sealed = self.codec.seal(id, Kind::Session, commit.session)?;
        let mut commands = Vec::new();
        for command in commit.outbox {
            if let Some(call) = call_of(command) {
                commands.push((
                    int(call.as_raw()),
                    self.codec.seal(id, Kind::Command, command)?,
                ));
            }
        }
        let done: Vec<i64> = commit.done.iter().map(|call| int(call.as_raw())).collect();
        let Commit {
            expected,
            fencing,
            inbox_through,
            now,
            ..
        } = commit;
        let finished = commit.session.is_finished();
        let ended = commit.session.phase() == Phase::Ended;
        if let Some(writer) = &self.writer {
            let commit = Committed {
                id,
                session: sealed,
                expected,
                fencing,
                commands,
                done,
                inbox_through: inbox_through.map(int),
                finished,
                ended,
                now: millis(now),
            };
            return writer.write(move |conn| sqlite::commit(conn, commit)).await;
        }
        let backend = self.backend;
        self.write(move |conn| {
            Box::pin(async move {
                let updated = sqlx::query(
                    "UPDATE handovers SET session = $1, version = version + 1 \
                     WHERE id = $2 AND version = $3 AND fencing = $4",
                )
                .bind(sealed)
                .bind(&key)
                .bind(int(expected.0))
                .bind(int(fencing.0))
                .execute(&mut *conn)
                .await
                .map_err(unavailable)?;
                if updated.rows_affected() != 1 {
                    return Err(refusal(conn, id, expected, fencing).await);
                }
                for (call, sealed) in commands {
                    sqlx::query(
                        "INSERT INTO outbox (handover_id, call_id, command) VALUES ($1, $2, $3)",
                    )
                    .bind(&key)
                    .bind(call)
                    .bind(sealed)
                    .execute(&mut *conn)
                    .await
                    .map_err(unavailable)?;
                }
                // After the inserts: a command can be produced and done within one commit.
                for call in done {
                    sqlx::query("DELETE FROM outbox WHERE handover_id = $1 AND call_id = $2")
                        .bind(&key)
                        .bind(call)
                        .execute(&mut *conn)
                        .await
                        .map_err(unavailable)?;
                }
                if let Some(through) = inbox_through {
                    sqlx::query("DELETE FROM inbox WHERE handover_id = $1 AND seq <= $2")
                        .bind(&key)
                        .bind(int(through))
                        .execute(&mut *conn)
                        .await
                        .map_err(unavailable)?;
                }
                if finished {
                    sqlx::query(
                        "UPDATE handovers SET finished_at = $1 WHERE id = $2 AND finished_at IS NULL",
                    )
                    .bind(millis(now))
                    .bind(&key)
                    .execute(&mut *conn)
                    .await
                    .map_err(unavailable)?;
                }
                if ended {
                    let row = sqlx::query(
                        "UPDATE handovers SET ended_at = $1 WHERE id = $2 AND ended_at IS NULL \
                         RETURNING user_id, session_id",
                    )
                    .bind(millis(now))
                    .bind(&key)
                    .fetch_optional(&mut *conn)
                    .await
                    .map_err(unavailable)?;
                    if let Some(row) = row {
                        let gate_key: (String, String) = (
                            row.try_get("user_id").map_err(unavailable)?,
                            row.try_get("session_id").map_err(unavailable)?,
                        );
                        let mut gate = gate(conn, backend, &gate_key).await?;
                        gate.ended(id);
                        save_gate(conn, &gate_key, &gate).await?;
                    }
                }
                Ok(Version(expected.0 + 1))
            })
        })
        .await
    }

    async fn pending_commands(&self, id: HandoverId) -> Result<Vec<Command>, StoreError> {
        let rows =
            sqlx::query("SELECT command FROM outbox WHERE handover_id = $1 ORDER BY call_id")
                .bind(id.to_string())
                .fetch_all(&self.pool)
                .await
                .map_err(unavailable)?;
        rows.iter()
            .map(|row| {
                let sealed: Vec<u8> = row.try_get("command").map_err(unavailable)?;
                self.codec.open(id, Kind::Command, &sealed)
            })
            .collect()
    }

    async fn append_input(&self, id: HandoverId, input: &Input) -> Result<u64, StoreError> {
        let key = id.to_string();
        let sealed = self.codec.seal(id, Kind::Input, input)?;
        if let Some(writer) = &self.writer {
            return writer
                .write(move |conn| sqlite::append_input(conn, id, &sealed))
                .await;
        }
        let backend = self.backend;
        self.write(move |conn| {
            Box::pin(async move {
                let row = sqlx::query(
                    "UPDATE handovers SET inbox_next = inbox_next + 1 \
                     WHERE id = $1 AND ended_at IS NULL RETURNING inbox_next",
                )
                .bind(&key)
                .fetch_optional(&mut *conn)
                .await
                .map_err(unavailable)?;
                let Some(row) = row else {
                    let exists = sqlx::query("SELECT 1 FROM handovers WHERE id = $1")
                        .bind(&key)
                        .fetch_optional(&mut *conn)
                        .await
                        .map_err(unavailable)?;
                    return Err(if exists.is_some() {
                        StoreError::Ended(id)
                    } else {
                        StoreError::NotFound(id)
                    });
                };
                let seq: i64 = row.try_get("inbox_next").map_err(unavailable)?;
                sqlx::query("INSERT INTO inbox (handover_id, seq, input) VALUES ($1, $2, $3)")
                    .bind(&key)
                    .bind(seq)
                    .bind(sealed)
                    .execute(&mut *conn)
                    .await
                    .map_err(unavailable)?;
                if backend == SqlBackend::Postgres {
                    sqlx::query("SELECT pg_notify($1, $2)")
                        .bind(INBOX_CHANNEL)
                        .bind(&key)
                        .execute(&mut *conn)
                        .await
                        .map_err(unavailable)?;
                }
                Ok(uint(seq))
            })
        })
        .await
    }

    async fn pending_inputs(&self, id: HandoverId) -> Result<Vec<(u64, Input)>, StoreError> {
        let rows = sqlx::query("SELECT seq, input FROM inbox WHERE handover_id = $1 ORDER BY seq")
            .bind(id.to_string())
            .fetch_all(&self.pool)
            .await
            .map_err(unavailable)?;
        rows.iter()
            .map(|row| {
                let seq: i64 = row.try_get("seq").map_err(unavailable)?;
                let sealed: Vec<u8> = row.try_get("input").map_err(unavailable)?;
                Ok((uint(seq), self.codec.open(id, Kind::Input, &sealed)?))
            })
            .collect()
    }

    async fn acquire_lease(
        &self,
        id: HandoverId,
        owner: &str,
        now: Timestamp,
        ttl: Duration,
    ) -> Result<Option<Lease>, StoreError> {
        let expires_at = now + ttl;
        let owner = owner.to_owned();
        if let Some(writer) = &self.writer {
            let now = millis(now);
            return writer
                .write(move |conn| sqlite::acquire_lease(conn, id, owner, now, expires_at))
                .await;
        }
        self.write(move |conn| {
            Box::pin(async move {
                let row = sqlx::query(
                    "UPDATE handovers SET owner = $1, fencing = fencing + 1, lease_expires_at = $2 \
                     WHERE id = $3 AND (owner IS NULL OR lease_expires_at <= $4) RETURNING fencing",
                )
                .bind(&owner)
                .bind(millis(expires_at))
                .bind(id.to_string())
                .bind(millis(now))
                .fetch_optional(&mut *conn)
                .await
                .map_err(unavailable)?;
                if let Some(row) = row {
                    let fencing: i64 = row.try_get("fencing").map_err(unavailable)?;
                    return Ok(Some(Lease {
                        owner,
                        fencing: FencingToken(uint(fencing)),
                        expires_at,
                    }));
                }
                let exists = sqlx::query("SELECT 1 FROM handovers WHERE id = $1")
                    .bind(id.to_string())
                    .fetch_optional(&mut *conn)
                    .await
                    .map_err(unavailable)?;
                if exists.is_some() {
                    Ok(None)
                } else {
                    Err(StoreError::NotFound(id))
                }
            })
        })
        .await
    }

    async fn renew_lease(
        &self,
        id: HandoverId,
        lease: &Lease,
        now: Timestamp,
        ttl: Duration,
    ) -> Result<Lease, StoreError> {
        let expires_at = now + ttl;
        let renewed = Lease {
            expires_at,
            ..lease.clone()
        };
        if let Some(writer) = &self.writer {
            return writer
                .write(move |conn| sqlite::renew_lease(conn, id, renewed))
                .await;
        }
        self.write(move |conn| {
            Box::pin(async move {
                let updated = sqlx::query(
                    "UPDATE handovers SET lease_expires_at = $1 \
                     WHERE id = $2 AND owner = $3 AND fencing = $4",
                )
                .bind(millis(expires_at))
                .bind(id.to_string())
                .bind(&renewed.owner)
                .bind(int(renewed.fencing.0))
                .execute(&mut *conn)
                .await
                .map_err(unavailable)?;
                if updated.rows_affected() == 1 {
                    Ok(renewed)
                } else {
                    Err(StoreError::Fenced)
                }
            })
        })
        .await
    }

    async fn release_lease(&self, id: HandoverId, lease: &Lease) -> Result<(), StoreError> {
        let fencing = int(lease.fencing.0);
        if let Some(writer) = &self.writer {
            return writer
                .write(move |conn| sqlite::release_lease(conn, id, fencing))
                .await;
        }
        self.write(move |conn| {
            Box::pin(async move {
                sqlx::query(
                    "UPDATE handovers SET owner = NULL, lease_expires_at = 0 \
                     WHERE id = $1 AND fencing = $2",
                )
                .bind(id.to_string())
                .bind(fencing)
                .execute(&mut *conn)
                .await
                .map_err(unavailable)?;
                Ok(())
            })
        })
        .await
    }

    async fn release_leases_of(&self, owner: &str) -> Result<u64, StoreError> {
        let owner = owner.to_owned();
        if let Some(writer) = &self.writer {
            return writer
                .write(move |conn| sqlite::release_leases_of(conn, &owner))
                .await;
        }
        self.write(move |conn| {
            Box::pin(async move {
                let done = sqlx::query(
                    "UPDATE handovers SET owner = NULL, lease_expires_at = 0 WHERE owner = $1",
                )
                .bind(owner)
                .execute(&mut *conn)
                .await
                .map_err(unavailable)?;
                Ok(done.rows_affected())
            })
        })
        .await
    }

    async fn live_handovers(&self) -> Result<Vec<HandoverId>, StoreError> {
        let rows = sqlx::query(
            "SELECT id FROM handovers WHERE finished_at IS NULL ORDER BY created_at, id",
        )
        .fetch_all(&self.pool)
        .await
        .map_err(unavailable)?;
        rows.iter().map(|row| id_of(row, "id")).collect()
    }

    async fn purge_ended(&self, before: Timestamp) -> Result<u64, StoreError> {
        let cutoff = millis(before);
        if let Some(writer) = &self.writer {
            return writer
                .write(move |conn| sqlite::purge_ended(conn, cutoff))
                .await;
        }
        self.write(move |conn| {
            Box::pin(async move {
                for statement in [
                    "DELETE FROM outbox WHERE handover_id IN (SELECT id FROM handovers WHERE finished_at < $1)",
                    "DELETE FROM inbox WHERE handover_id IN (SELECT id FROM handovers WHERE finished_at < $1)",
                ] {
                    sqlx::query(statement)
                        .bind(cutoff)
                        .execute(&mut *conn)
                        .await
                        .map_err(unavailable)?;
                }
                let purged = sqlx::query("DELETE FROM handovers WHERE finished_at < $1")
                    .bind(cutoff)
                    .execute(&mut *conn)
                    .await
                    .map_err(unavailable)?
                    .rows_affected();
                // A Cognigy session's gate goes with its last handover.
                sqlx::query(
                    "DELETE FROM gates WHERE NOT EXISTS (SELECT 1 FROM handovers h \
                     WHERE h.user_id = gates.user_id AND h.session_id = gates.session_id)",
                )
                .execute(&mut *conn)
                .await
                .map_err(unavailable)?;
                Ok(purged)
            })
        })
        .await
    }
}

/// The file of a `sqlite:` URL, as sqlx reads it: after `sqlite://` (or `sqlite:`), up to
/// the query.
fn sqlite_path(url: &str) -> std::path::PathBuf {
    let rest = url
        .strip_prefix("sqlite://")
        .or_else(|| url.strip_prefix("sqlite:"))
        .unwrap_or(url);
    let path = rest.split_once('?').map_or(rest, |(path, _)| path);
    std::path::PathBuf::from(path)
}

impl FromStr for SqlBackend {
    type Err = StoreError;

    fn from_str(url: &str) -> Result<Self, StoreError> {
        if url.starts_with("sqlite:") {
            Ok(Self::Sqlite)
        } else if url.starts_with("postgres:") || url.starts_with("postgresql:") {
            Ok(Self::Postgres)
        } else {
            Err(StoreError::Unavailable(
                "the database URL must start with sqlite: or postgres:".to_owned(),
            ))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sqlite_url_names_its_file_as_sqlx_reads_it() {
        for (url, path) in [
            ("sqlite://data/handover.db", "data/handover.db"),
            (
                "sqlite:///var/lib/handover.db?mode=rwc",
                "/var/lib/handover.db",
            ),
            ("sqlite:handover.db", "handover.db"),
        ] {
            assert_eq!(sqlite_path(url), std::path::PathBuf::from(path), "{url}");
        }
    }

    #[tokio::test]
    async fn an_in_memory_sqlite_database_is_refused_with_a_clear_error() {
        for url in ["sqlite::memory:", "sqlite://handover.db?mode=memory"] {
            let error = SqlStore::connect(url, Keyring::ephemeral())
                .await
                .map(|_| ())
                .expect_err("an in-memory SQLite database would split reads from writes");
            assert!(
                matches!(&error, StoreError::Unavailable(text) if text.contains("in-memory")),
                "{url}: {error}"
            );
        }
    }
}
