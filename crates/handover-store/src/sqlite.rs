//! SQLite's writes, run by the writer's thread ([`crate::writer`]) on its own connection.
//!
//! The same statements as the PostgreSQL path in `sql.rs`, in SQLite's dialect and
//! synchronous. The conformance tests run both against one contract.

use handover_core::ports::{FencingToken, Lease, StoreError, Version};
use handover_core::{Admission, HandoverId, RequestId, StartGate};
use rusqlite::{Connection, OptionalExtension, params};

use crate::writer::failed;

fn fail(error: rusqlite::Error) -> StoreError {
    failed(&error)
}

fn uint(value: i64) -> u64 {
    u64::try_from(value).unwrap_or(0)
}

/// A new handover's row, sealed.
pub(crate) struct NewHandover {
    pub(crate) id: HandoverId,
    pub(crate) key: (String, String),
    pub(crate) request: RequestId,
    pub(crate) session: Vec<u8>,
    pub(crate) address: Vec<u8>,
    pub(crate) created_at: i64,
    pub(crate) ended_at: Option<i64>,
    pub(crate) finished_at: Option<i64>,
}

/// A commit, sealed.
pub(crate) struct Committed {
    pub(crate) id: HandoverId,
    pub(crate) session: Vec<u8>,
    pub(crate) expected: Version,
    pub(crate) fencing: FencingToken,
    pub(crate) commands: Vec<(i64, Vec<u8>)>,
    pub(crate) done: Vec<i64>,
    pub(crate) inbox_through: Option<i64>,
    pub(crate) finished: bool,
    pub(crate) ended: bool,
    pub(crate) now: i64,
}

fn gate(conn: &Connection, key: &(String, String)) -> Result<StartGate, StoreError> {
    let empty = serde_json::to_string(&StartGate::default())
        .map_err(|_| StoreError::Corrupt("the start gate could not be written".to_owned()))?;
    conn.prepare_cached(
        "INSERT INTO gates (user_id, session_id, gate) VALUES (?1, ?2, ?3) ON CONFLICT DO NOTHING",
    )
    .and_then(|mut s| s.execute(params![key.0, key.1, empty]))
    .map_err(fail)?;
    let text: String = conn
        .prepare_cached("SELECT gate FROM gates WHERE user_id = ?1 AND session_id = ?2")
        .and_then(|mut s| s.query_row(params![key.0, key.1], |row| row.get(0)))
        .map_err(fail)?;
    serde_json::from_str(&text)
        .map_err(|_| StoreError::Corrupt("a start gate is not readable by this version".to_owned()))
}

fn save_gate(
    conn: &Connection,
    key: &(String, String),
    gate: &StartGate,
) -> Result<(), StoreError> {
    let text = serde_json::to_string(gate)
        .map_err(|_| StoreError::Corrupt("the start gate could not be written".to_owned()))?;
    conn.prepare_cached("UPDATE gates SET gate = ?1 WHERE user_id = ?2 AND session_id = ?3")
        .and_then(|mut s| s.execute(params![text, key.0, key.1]))
        .map_err(fail)?;
    Ok(())
}

fn exists(conn: &Connection, id: &str) -> Result<bool, StoreError> {
    conn.prepare_cached("SELECT 1 FROM handovers WHERE id = ?1")
        .and_then(|mut s| s.query_row(params![id], |_| Ok(())).optional())
        .map(|row| row.is_some())
        .map_err(fail)
}

pub(crate) fn admit(conn: &Connection, new: NewHandover) -> Result<Admission, StoreError> {
    let NewHandover {
        id,
        key,
        request,
        session,
        address,
        created_at,
        ended_at,
        finished_at,
    } = new;
    let mut gate_now = gate(conn, &key)?;
    if let Some(live) = gate_now.live() {
        let row: Option<Option<i64>> = conn
            .prepare_cached("SELECT ended_at FROM handovers WHERE id = ?1")
            .and_then(|mut s| {
                s.query_row(params![live.to_string()], |row| row.get(0))
                    .optional()
            })
            .map_err(fail)?;
        if !matches!(row, Some(None)) {
            gate_now.ended(live);
        }
    }
    let admission = gate_now.admit(request, id);
    if admission == Admission::Started(id) {
        conn.prepare_cached(
            "INSERT INTO handovers (id, user_id, session_id, session, address, version, created_at, ended_at, finished_at) \
             VALUES (?1, ?2, ?3, ?4, ?5, 1, ?6, ?7, ?8)",
        )
        .and_then(|mut s| {
            s.execute(params![
                id.to_string(),
                key.0,
                key.1,
                session,
                address,
                created_at,
                ended_at,
                finished_at
            ])
        })
        .map_err(fail)?;
    }
    save_gate(conn, &key, &gate_now)?;
    Ok(admission)
}

fn refusal(
    conn: &Connection,
    id: HandoverId,
    expected: Version,
    fencing: FencingToken,
) -> StoreError {
    let row: Result<Option<(i64, i64)>, _> = conn
        .prepare_cached("SELECT version, fencing FROM handovers WHERE id = ?1")
        .and_then(|mut s| {
            s.query_row(params![id.to_string()], |row| {
                Ok((row.get(0)?, row.get(1)?))
            })
            .optional()
        });
    match row {
        Ok(row) => refusal_of(id, row, expected, fencing),
        Err(error) => fail(error),
    }
}

/// Why a conditional update of a handover's row touched nothing, from its stored
/// `(version, fencing)` (none: no such handover). Both backends decide alike.
pub(crate) fn refusal_of(
    id: HandoverId,
    stored: Option<(i64, i64)>,
    expected: Version,
    fencing: FencingToken,
) -> StoreError {
    match stored {
        None => StoreError::NotFound(id),
        Some((_, stored_fencing)) if uint(stored_fencing) != fencing.0 => StoreError::Fenced,
        Some((version, _)) => StoreError::Conflict {
            stored: Version(uint(version).max(expected.0)),
        },
    }
}

pub(crate) fn commit(conn: &Connection, commit: Committed) -> Result<Version, StoreError> {
    let key = commit.id.to_string();
    let updated = conn
        .prepare_cached(
            "UPDATE handovers SET session = ?1, version = version + 1 \
             WHERE id = ?2 AND version = ?3 AND fencing = ?4",
        )
        .and_then(|mut s| {
            s.execute(params![
                commit.session,
                key,
                i64::try_from(commit.expected.0).unwrap_or(i64::MAX),
                i64::try_from(commit.fencing.0).unwrap_or(i64::MAX)
            ])
        })
        .map_err(fail)?;
    if updated != 1 {
        return Err(refusal(conn, commit.id, commit.expected, commit.fencing));
    }
    if !commit.commands.is_empty() {
        let mut insert = conn
            .prepare_cached(
                "INSERT INTO outbox (handover_id, call_id, command) VALUES (?1, ?2, ?3)",
            )
            .map_err(fail)?;
        for (call, sealed) in &commit.commands {
            insert.execute(params![key, call, sealed]).map_err(fail)?;
        }
    }
    // After the inserts: a command can be produced and done within one commit.
    if !commit.done.is_empty() {
        let mut delete = conn
            .prepare_cached("DELETE FROM outbox WHERE handover_id = ?1 AND call_id = ?2")
            .map_err(fail)?;
        for call in &commit.done {
            delete.execute(params![key, call]).map_err(fail)?;
        }
    }
    if let Some(through) = commit.inbox_through {
        conn.prepare_cached("DELETE FROM inbox WHERE handover_id = ?1 AND seq <= ?2")
            .and_then(|mut s| s.execute(params![key, through]))
            .map_err(fail)?;
    }
    if commit.finished {
        conn.prepare_cached(
            "UPDATE handovers SET finished_at = ?1 WHERE id = ?2 AND finished_at IS NULL",
        )
        .and_then(|mut s| s.execute(params![commit.now, key]))
        .map_err(fail)?;
    }
    if commit.ended {
        let ended: Option<(String, String)> = conn
            .prepare_cached(
                "UPDATE handovers SET ended_at = ?1 WHERE id = ?2 AND ended_at IS NULL \
                 RETURNING user_id, session_id",
            )
            .and_then(|mut s| {
                s.query_row(params![commit.now, key], |row| {
                    Ok((row.get(0)?, row.get(1)?))
                })
                .optional()
            })
            .map_err(fail)?;
        if let Some(gate_key) = ended {
            let mut gate_now = gate(conn, &gate_key)?;
            gate_now.ended(commit.id);
            save_gate(conn, &gate_key, &gate_now)?;
        }
    }
    Ok(Version(commit.expected.0 + 1))
}

pub(crate) fn append_input(
    conn: &Connection,
    id: HandoverId,
    sealed: &[u8],
) -> Result<u64, StoreError> {
    let key = id.to_string();
    let seq: Option<i64> = conn
        .prepare_cached(
            "UPDATE handovers SET inbox_next = inbox_next + 1 \
             WHERE id = ?1 AND ended_at IS NULL RETURNING inbox_next",
        )
        .and_then(|mut s| s.query_row(params![key], |row| row.get(0)).optional())
        .map_err(fail)?;
    let Some(seq) = seq else {
        return Err(if exists(conn, &key)? {
            StoreError::Ended(id)
        } else {
            StoreError::NotFound(id)
        });
    };
    conn.prepare_cached("INSERT INTO inbox (handover_id, seq, input) VALUES (?1, ?2, ?3)")
        .and_then(|mut s| s.execute(params![key, seq, sealed]))
        .map_err(fail)?;
    Ok(uint(seq))
}

pub(crate) fn acquire_lease(
    conn: &Connection,
    id: HandoverId,
    owner: String,
    now: i64,
    expires_at: handover_core::Timestamp,
) -> Result<Option<Lease>, StoreError> {
    let key = id.to_string();
    let expires = i64::try_from(expires_at.as_unix_millis()).unwrap_or(i64::MAX);
    let fencing: Option<i64> = conn
        .prepare_cached(
            "UPDATE handovers SET owner = ?1, fencing = fencing + 1, lease_expires_at = ?2 \
             WHERE id = ?3 AND (owner IS NULL OR lease_expires_at <= ?4) RETURNING fencing",
        )
        .and_then(|mut s| {
            s.query_row(params![owner, expires, key, now], |row| row.get(0))
                .optional()
        })
        .map_err(fail)?;
    match fencing {
        Some(fencing) => Ok(Some(Lease {
            owner,
            fencing: FencingToken(uint(fencing)),
            expires_at,
        })),
        None if exists(conn, &key)? => Ok(None),
        None => Err(StoreError::NotFound(id)),
    }
}

pub(crate) fn renew_lease(
    conn: &Connection,
    id: HandoverId,
    renewed: Lease,
) -> Result<Lease, StoreError> {
    let updated = conn
        .prepare_cached(
            "UPDATE handovers SET lease_expires_at = ?1 WHERE id = ?2 AND owner = ?3 AND fencing = ?4",
        )
        .and_then(|mut s| {
            s.execute(params![
                i64::try_from(renewed.expires_at.as_unix_millis()).unwrap_or(i64::MAX),
                id.to_string(),
                renewed.owner,
                i64::try_from(renewed.fencing.0).unwrap_or(i64::MAX)
            ])
        })
        .map_err(fail)?;
    if updated == 1 {
        Ok(renewed)
    } else {
        Err(StoreError::Fenced)
    }
}

pub(crate) fn release_lease(
    conn: &Connection,
    id: HandoverId,
    fencing: i64,
) -> Result<(), StoreError> {
    conn.prepare_cached(
        "UPDATE handovers SET owner = NULL, lease_expires_at = 0 WHERE id = ?1 AND fencing = ?2",
    )
    .and_then(|mut s| s.execute(params![id.to_string(), fencing]))
    .map_err(fail)?;
    Ok(())
}

pub(crate) fn release_leases_of(conn: &Connection, owner: &str) -> Result<u64, StoreError> {
    conn.prepare_cached("UPDATE handovers SET owner = NULL, lease_expires_at = 0 WHERE owner = ?1")
        .and_then(|mut s| s.execute(params![owner]))
        .map(|n| n as u64)
        .map_err(fail)
}

pub(crate) fn purge_ended(conn: &Connection, cutoff: i64) -> Result<u64, StoreError> {
    for statement in [
        "DELETE FROM outbox WHERE handover_id IN (SELECT id FROM handovers WHERE finished_at < ?1)",
        "DELETE FROM inbox WHERE handover_id IN (SELECT id FROM handovers WHERE finished_at < ?1)",
    ] {
        conn.execute(statement, params![cutoff]).map_err(fail)?;
    }
    let purged = conn
        .execute(
            "DELETE FROM handovers WHERE finished_at < ?1",
            params![cutoff],
        )
        .map_err(fail)?;
    // A Cognigy session's gate goes with its last handover.
    conn.execute(
        "DELETE FROM gates WHERE NOT EXISTS (SELECT 1 FROM handovers h \
         WHERE h.user_id = gates.user_id AND h.session_id = gates.session_id)",
        (),
    )
    .map_err(fail)?;
    Ok(purged as u64)
}

pub(crate) fn reserve_slot(
    conn: &Connection,
    key: &str,
    now: i64,
    interval: i64,
) -> Result<i64, StoreError> {
    conn.prepare_cached(
        "INSERT INTO pacing (key, next_at) VALUES (?1, ?2) \
         ON CONFLICT (key) DO UPDATE SET next_at = MAX(pacing.next_at + ?3, excluded.next_at) \
         RETURNING next_at",
    )
    .and_then(|mut s| s.query_row(params![key, now + interval, interval], |row| row.get(0)))
    .map_err(fail)
}
