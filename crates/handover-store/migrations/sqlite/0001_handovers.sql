-- Handovers: the sealed session and address, optimistic version, lease, inbox counter.
CREATE TABLE handovers (
    id TEXT PRIMARY KEY NOT NULL,
    user_id TEXT NOT NULL,
    session_id TEXT NOT NULL,
    session BLOB NOT NULL,
    address BLOB NOT NULL,
    version INTEGER NOT NULL,
    created_at INTEGER NOT NULL,
    -- The handover reported its terminal status (the gate reopens, inputs are refused).
    ended_at INTEGER,
    -- Nothing is left to do (no live handover to drive; purged after retention).
    finished_at INTEGER,
    inbox_next INTEGER NOT NULL DEFAULT 0,
    owner TEXT,
    fencing INTEGER NOT NULL DEFAULT 0,
    lease_expires_at INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX handovers_live ON handovers (finished_at, created_at);
CREATE INDEX handovers_bot ON handovers (user_id, session_id);

-- One start gate per Cognigy session (JSON, no secrets: request and handover ids).
CREATE TABLE gates (
    user_id TEXT NOT NULL,
    session_id TEXT NOT NULL,
    gate TEXT NOT NULL,
    PRIMARY KEY (user_id, session_id)
);

-- Commands produced but not yet done, sealed.
CREATE TABLE outbox (
    handover_id TEXT NOT NULL,
    call_id INTEGER NOT NULL,
    command BLOB NOT NULL,
    PRIMARY KEY (handover_id, call_id)
);

-- Inputs accepted but not yet applied, sealed.
CREATE TABLE inbox (
    handover_id TEXT NOT NULL,
    seq INTEGER NOT NULL,
    input BLOB NOT NULL,
    PRIMARY KEY (handover_id, seq)
);
