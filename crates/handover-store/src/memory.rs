//! The memory store: the whole contract in one process, for tests and embedding. Values are
//! sealed like in the databases, so it exercises the same codec.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use async_trait::async_trait;
use handover_core::ports::{
    BotAddress, Commit, FencingToken, Lease, SessionStore, StoreError, StoredHandover, Version,
};
use handover_core::{
    Admission, CallId, Command, HandoverId, Input, Phase, RequestId, Session, StartGate, Timestamp,
};

use crate::codec::{Codec, Kind};
use crate::crypto::Keyring;
use crate::{Summary, SummaryFilter, gate_key};

#[derive(Debug)]
struct Row {
    user_id: String,
    session_id: String,
    session: Vec<u8>,
    address: Vec<u8>,
    version: u64,
    created: u64,
    ended_at: Option<Timestamp>,
    finished_at: Option<Timestamp>,
    inbox_next: u64,
    inbox: BTreeMap<u64, Vec<u8>>,
    outbox: BTreeMap<CallId, Vec<u8>>,
    owner: Option<String>,
    fencing: u64,
    expires_at: Timestamp,
}

#[derive(Debug, Default)]
struct State {
    rows: BTreeMap<HandoverId, Row>,
    gates: BTreeMap<(String, String), StartGate>,
    created: u64,
}

/// Everything in memory; gone when the process ends.
#[derive(Debug)]
pub struct MemoryStore {
    codec: Codec,
    state: Arc<Mutex<State>>,
}

impl MemoryStore {
    /// An empty store sealing with `keys`.
    pub fn new(keys: Keyring) -> Self {
        Self {
            codec: Codec::new(keys),
            state: Arc::new(Mutex::new(State::default())),
        }
    }

    /// The same data seen with other keys: what a restart with a changed key configuration
    /// sees.
    pub fn reopen(&self, keys: Keyring) -> Self {
        Self {
            codec: Codec::new(keys),
            state: self.state.clone(),
        }
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Every sealed value held, for tests that look for plain text.
    pub fn sealed_values(&self) -> Vec<Vec<u8>> {
        let state = self.state();
        state
            .rows
            .values()
            .flat_map(|row| {
                [row.session.clone(), row.address.clone()]
                    .into_iter()
                    .chain(row.inbox.values().cloned())
                    .chain(row.outbox.values().cloned())
            })
            .collect()
    }

    /// Handovers, newest first, with what a list shows.
    pub fn summaries(&self, filter: &SummaryFilter) -> Result<Vec<Summary>, StoreError> {
        let rows: Vec<(HandoverId, Vec<u8>, String, String)> = {
            let state = self.state();
            let mut rows: Vec<_> = state
                .rows
                .iter()
                .filter(|(_, row)| {
                    filter
                        .live
                        .is_none_or(|live| live == row.ended_at.is_none())
                })
                .filter(|(_, row)| filter.user_id.as_ref().is_none_or(|u| *u == row.user_id))
                .filter(|(_, row)| {
                    filter
                        .session_id
                        .as_ref()
                        .is_none_or(|s| *s == row.session_id)
                })
                .map(|(id, row)| {
                    (
                        row.created,
                        *id,
                        row.session.clone(),
                        row.user_id.clone(),
                        row.session_id.clone(),
                    )
                })
                .collect();
            rows.sort_by_key(|(created, ..)| std::cmp::Reverse(*created));
            rows.truncate(filter.limit);
            rows.into_iter()
                .map(|(_, id, sealed, user, session)| (id, sealed, user, session))
                .collect()
        };
        rows.into_iter()
            .map(|(id, sealed, user, session_id)| {
                let session: Session = self.codec.open(id, Kind::Session, &sealed)?;
                Ok(Summary::of(&session, user, session_id))
            })
            .collect()
    }
}

fn row(state: &mut State, id: HandoverId) -> Result<&mut Row, StoreError> {
    state.rows.get_mut(&id).ok_or(StoreError::NotFound(id))
}

#[async_trait]
impl SessionStore for MemoryStore {
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
        let mut state = self.state();
        let key = gate_key(address);
        let mut gate = state.gates.get(&key).cloned().unwrap_or_default();
        if let Some(live) = gate.live()
            && state
                .rows
                .get(&live)
                .is_none_or(|r| r.finished_at.is_some())
        {
            gate.ended(live);
        }
        let admission = gate.admit(request.clone(), id);
        if admission == Admission::Started(id) {
            state.created += 1;
            let created = state.created;
            state.rows.insert(
                id,
                Row {
                    user_id: address.user_id.clone(),
                    session_id: address.session_id.clone(),
                    session: sealed_session,
                    address: sealed_address,
                    version: 1,
                    created,
                    ended_at: (session.phase() == Phase::Ended).then_some(now),
                    finished_at: session.is_finished().then_some(now),
                    inbox_next: 0,
                    inbox: BTreeMap::new(),
                    outbox: BTreeMap::new(),
                    owner: None,
                    fencing: 0,
                    expires_at: Timestamp::EPOCH,
                },
            );
        }
        state.gates.insert(key, gate);
        Ok(admission)
    }

    async fn load(&self, id: HandoverId) -> Result<Option<StoredHandover>, StoreError> {
        let (session, address, version) = {
            let state = self.state();
            let Some(row) = state.rows.get(&id) else {
                return Ok(None);
            };
            (row.session.clone(), row.address.clone(), row.version)
        };
        Ok(Some(StoredHandover {
            session: self.codec.open(id, Kind::Session, &session)?,
            address: self.codec.open(id, Kind::Address, &address)?,
            version: Version(version),
        }))
    }

    async fn commit(&self, commit: Commit<'_>) -> Result<Version, StoreError> {
        let id = commit.session.handover_id();
        let sealed = self.codec.seal(id, Kind::Session, commit.session)?;
        let mut commands = Vec::new();
        for command in commit.outbox {
            if let Some(call) = crate::call_of(command) {
                commands.push((call, self.codec.seal(id, Kind::Command, command)?));
            }
        }
        let mut state = self.state();
        let row = row(&mut state, id)?;
        if row.fencing != commit.fencing.0 {
            return Err(StoreError::Fenced);
        }
        if row.version != commit.expected.0 {
            return Err(StoreError::Conflict {
                stored: Version(row.version),
            });
        }
        row.version += 1;
        row.session = sealed;
        for (call, sealed) in commands {
            row.outbox.insert(call, sealed);
        }
        // After the inserts: a command can be produced and done within one commit.
        for call in commit.done {
            row.outbox.remove(call);
        }
        if let Some(through) = commit.inbox_through {
            row.inbox.retain(|seq, _| *seq > through);
        }
        let version = Version(row.version);
        if commit.session.is_finished() && row.finished_at.is_none() {
            row.finished_at = Some(commit.now);
        }
        if commit.session.phase() == Phase::Ended && row.ended_at.is_none() {
            row.ended_at = Some(commit.now);
            let key = (row.user_id.clone(), row.session_id.clone());
            if let Some(gate) = state.gates.get_mut(&key) {
                gate.ended(id);
            }
        }
        Ok(version)
    }

    async fn pending_commands(&self, id: HandoverId) -> Result<Vec<Command>, StoreError> {
        let sealed: Vec<Vec<u8>> = {
            let mut state = self.state();
            row(&mut state, id)?.outbox.values().cloned().collect()
        };
        sealed
            .iter()
            .map(|blob| self.codec.open(id, Kind::Command, blob))
            .collect()
    }

    async fn append_input(&self, id: HandoverId, input: &Input) -> Result<u64, StoreError> {
        let sealed = self.codec.seal(id, Kind::Input, input)?;
        let mut state = self.state();
        let row = row(&mut state, id)?;
        if row.ended_at.is_some() {
            return Err(StoreError::Ended(id));
        }
        row.inbox_next += 1;
        row.inbox.insert(row.inbox_next, sealed);
        Ok(row.inbox_next)
    }

    async fn pending_inputs(&self, id: HandoverId) -> Result<Vec<(u64, Input)>, StoreError> {
        let sealed: Vec<(u64, Vec<u8>)> = {
            let mut state = self.state();
            row(&mut state, id)?
                .inbox
                .iter()
                .map(|(seq, blob)| (*seq, blob.clone()))
                .collect()
        };
        sealed
            .into_iter()
            .map(|(seq, blob)| Ok((seq, self.codec.open(id, Kind::Input, &blob)?)))
            .collect()
    }

    async fn acquire_lease(
        &self,
        id: HandoverId,
        owner: &str,
        now: Timestamp,
        ttl: Duration,
    ) -> Result<Option<Lease>, StoreError> {
        let mut state = self.state();
        let row = row(&mut state, id)?;
        if row.owner.is_some() && row.expires_at > now {
            return Ok(None);
        }
        row.owner = Some(owner.to_owned());
        row.fencing += 1;
        row.expires_at = now + ttl;
        Ok(Some(Lease {
            owner: owner.to_owned(),
            fencing: FencingToken(row.fencing),
            expires_at: row.expires_at,
        }))
    }

    async fn renew_lease(
        &self,
        id: HandoverId,
        lease: &Lease,
        now: Timestamp,
        ttl: Duration,
    ) -> Result<Lease, StoreError> {
        let mut state = self.state();
        let row = row(&mut state, id)?;
        if row.fencing != lease.fencing.0 || row.owner.as_deref() != Some(lease.owner.as_str()) {
            return Err(StoreError::Fenced);
        }
        row.expires_at = now + ttl;
        Ok(Lease {
            expires_at: row.expires_at,
            ..lease.clone()
        })
    }

    async fn release_lease(&self, id: HandoverId, lease: &Lease) -> Result<(), StoreError> {
        let mut state = self.state();
        let row = row(&mut state, id)?;
        if row.fencing == lease.fencing.0 {
            row.owner = None;
            row.expires_at = Timestamp::EPOCH;
        }
        Ok(())
    }

    async fn release_leases_of(&self, owner: &str) -> Result<u64, StoreError> {
        let mut state = self.state();
        let mut freed = 0;
        for row in state.rows.values_mut() {
            if row.owner.as_deref() == Some(owner) {
                row.owner = None;
                row.expires_at = Timestamp::EPOCH;
                freed += 1;
            }
        }
        Ok(freed)
    }

    async fn live_handovers(&self) -> Result<Vec<HandoverId>, StoreError> {
        let state = self.state();
        let mut live: Vec<(u64, HandoverId)> = state
            .rows
            .iter()
            .filter(|(_, row)| row.finished_at.is_none())
            .map(|(id, row)| (row.created, *id))
            .collect();
        live.sort();
        Ok(live.into_iter().map(|(_, id)| id).collect())
    }

    async fn purge_ended(&self, before: Timestamp) -> Result<u64, StoreError> {
        let mut state = self.state();
        let before_count = state.rows.len();
        state
            .rows
            .retain(|_, row| row.finished_at.is_none_or(|at| at >= before));
        // A Cognigy session's gate goes with its last handover.
        let kept: std::collections::BTreeSet<(String, String)> = state
            .rows
            .values()
            .map(|row| (row.user_id.clone(), row.session_id.clone()))
            .collect();
        state.gates.retain(|key, _| kept.contains(key));
        Ok((before_count - state.rows.len()) as u64)
    }
}
