-- Handovers: the sealed session and address, optimistic version, lease, inbox counter.
CREATE TABLE handovers (
    id TEXT PRIMARY KEY NOT NULL,
    user_id TEXT NOT NULL,
    session_id TEXT NOT NULL,
    session BYTEA NOT NULL,
    address BYTEA NOT NULL,
    version BIGINT NOT NULL,
    created_at BIGINT NOT NULL,
    -- The handover reported its terminal status (the gate reopens, inputs are refused).
    ended_at BIGINT,
    -- Nothing is left to do (no live handover to drive; purged after retention).
    finished_at BIGINT,
    inbox_next BIGINT NOT NULL DEFAULT 0,
    owner TEXT,
    fencing BIGINT NOT NULL DEFAULT 0,
    lease_expires_at BIGINT NOT NULL DEFAULT 0
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
    call_id BIGINT NOT NULL,
    command BYTEA NOT NULL,
    PRIMARY KEY (handover_id, call_id)
);

-- Inputs accepted but not yet applied, sealed.
CREATE TABLE inbox (
    handover_id TEXT NOT NULL,
    seq BIGINT NOT NULL,
    input BYTEA NOT NULL,
    PRIMARY KEY (handover_id, seq)
);
