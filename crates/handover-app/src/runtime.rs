//! The runtime: one driver task per live handover this instance holds the lease of.
//!
//! A driver follows the core's driving contract over the store's outbox:
//! 1. take the lease, load the session; feed `Start` (new) or `Resumed` (restored), and run
//!    the outbox's pending commands again;
//! 2. gather inputs (the inbox, call results, stream events, the due timer), feed them to the
//!    session, and commit the new state with the commands it returned, the calls whose results
//!    were fed, and the inbox position — one transaction;
//! 3. only then execute the commands (each call a task that reports back); repeat.
//!
//! A lost lease (`Fenced`) or a concurrent write (`Conflict`) stops the driver at once: another
//! instance owns the handover now. Store outages are retried with backoff, executing nothing
//! until the state is safe.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use handover_core::ports::{
    BotAddress, BotPort, Commit, Lease, SalesforcePort, SessionStore, StoreError,
};
use handover_core::{
    AgentMessage, BotDelivery, CallFailure, CallId, Command, EndReason, EntryId, HandoverId, Input,
    Notification, Observation, OutboundBody, Phase, SalesforceRequest, SalesforceResponse, Session,
    SessionConfig, StreamClosed, StreamEvent, Timestamp,
};
use tokio::sync::{Notify, mpsc, watch};
use tokio::task::JoinHandle;

use crate::metrics::{Direction, Metrics, Phase as PhaseLabel};

/// Resolves once `stop` says so (the watch guard never lives across an `await`).
pub async fn stopped(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|stop| *stop).await;
}

/// UTC now, as the core wants it.
pub fn now() -> Timestamp {
    let millis = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
    Timestamp::from_unix_millis(millis)
}

/// What the runtime is made of.
pub struct Parts {
    /// The store.
    pub store: Arc<dyn SessionStore>,
    /// Salesforce, per deployment name.
    pub deployments: BTreeMap<String, Arc<dyn SalesforcePort>>,
    /// The deployment of handovers that name none.
    pub default_deployment: String,
    /// Cognigy.
    pub bot: Arc<dyn BotPort>,
    /// The core's tuning.
    pub session_config: SessionConfig,
    /// This instance's name in leases.
    pub owner: String,
    /// How long a lease lasts unless renewed.
    pub lease_ttl: Duration,
    /// How often a driver looks at its inbox without being woken (the wake-up is the fast
    /// path; this is the safety net).
    pub inbox_poll: Duration,
    /// Metrics.
    pub metrics: Metrics,
    /// Whether debug logs may carry message text.
    pub log_text: bool,
    /// The most handovers this instance drives at once: starts beyond it are refused, and
    /// the takeover scan leaves the rest to other instances (or to a later scan). Each live
    /// handover holds a stream's socket, so this keeps the descriptors the store needs.
    pub max_live: usize,
}

impl std::fmt::Debug for Parts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Parts")
            .field("owner", &self.owner)
            .finish_non_exhaustive()
    }
}

struct Inner {
    parts: Parts,
    drivers: Mutex<HashMap<HandoverId, Driver>>,
    /// Rooms taken: drivers running or about to be (see [`Room`]).
    rooms: AtomicUsize,
    shutdown: watch::Sender<bool>,
}

/// Room for one more driver, under [`Parts::max_live`]. A driver holds its room until its
/// task ends (or is aborted); a room dropped unused is free again at once.
#[derive(Debug)]
pub struct Room(Arc<Inner>);

impl Drop for Room {
    fn drop(&mut self) {
        self.0.rooms.fetch_sub(1, Ordering::AcqRel);
    }
}

impl std::fmt::Debug for Inner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Inner")
            .field("rooms", &self.rooms)
            .finish_non_exhaustive()
    }
}

struct Driver {
    wake: Arc<Notify>,
    task: JoinHandle<()>,
}

/// The drivers of this instance.
#[derive(Clone)]
pub struct Runtime {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Runtime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Runtime")
            .field("owner", &self.inner.parts.owner)
            .finish_non_exhaustive()
    }
}

impl Runtime {
    /// A runtime with no drivers yet.
    pub fn new(parts: Parts) -> Self {
        let (shutdown, _) = watch::channel(false);
        Self {
            inner: Arc::new(Inner {
                parts,
                drivers: Mutex::new(HashMap::new()),
                rooms: AtomicUsize::new(0),
                shutdown,
            }),
        }
    }

    /// The store.
    pub fn store(&self) -> &Arc<dyn SessionStore> {
        &self.inner.parts.store
    }

    /// The metrics.
    pub fn metrics(&self) -> &Metrics {
        &self.inner.parts.metrics
    }

    /// The core's tuning for new sessions.
    pub fn session_config(&self) -> &SessionConfig {
        &self.inner.parts.session_config
    }

    /// Whether `name` is a configured deployment.
    pub fn has_deployment(&self, name: &str) -> bool {
        self.inner.parts.deployments.contains_key(name)
    }

    /// Whether the runtime is shutting down.
    pub fn is_stopping(&self) -> bool {
        *self.inner.shutdown.borrow()
    }

    fn drivers(&self) -> std::sync::MutexGuard<'_, HashMap<HandoverId, Driver>> {
        self.inner
            .drivers
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// How many handovers this instance drives now.
    pub fn driving(&self) -> usize {
        let mut drivers = self.drivers();
        drivers.retain(|_, driver| !driver.task.is_finished());
        drivers.len()
    }

    /// The most handovers this instance drives at once.
    pub fn max_live(&self) -> usize {
        self.inner.parts.max_live
    }

    /// Room for one more driver, or `None` at [`Parts::max_live`].
    pub fn take_room(&self) -> Option<Room> {
        let max = self.inner.parts.max_live;
        self.inner
            .rooms
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |taken| {
                (taken < max).then_some(taken + 1)
            })
            .ok()
            .map(|_| Room(self.inner.clone()))
    }

    /// Drives `id` here, in `room`, if no local driver does: `fresh` for a handover just
    /// admitted (it starts), otherwise it resumes. The driver gives up at once if another
    /// instance holds the lease. An unused room is given back.
    pub fn drive(&self, id: HandoverId, fresh: bool, room: Room) {
        if self.is_stopping() {
            return;
        }
        let mut drivers = self.drivers();
        if drivers.get(&id).is_some_and(|d| !d.task.is_finished()) {
            return;
        }
        let wake = Arc::new(Notify::new());
        let task = tokio::spawn(drive(self.clone(), id, wake.clone(), fresh, room));
        drivers.insert(id, Driver { wake, task });
    }

    /// Tells the local driver of `id`, if any, that its inbox grew.
    pub fn wake(&self, id: HandoverId) {
        if let Some(driver) = self.drivers().get(&id) {
            driver.wake.notify_one();
        }
    }

    /// Looks for live handovers nobody here drives and tries to take them: at start (resume
    /// after a restart) and periodically (take over from a crashed instance).
    ///
    /// At [`Parts::max_live`] the rest are left in the store, nothing lost: another instance
    /// takes them, or a later scan here once handovers have ended.
    pub async fn scan(&self) -> Result<usize, StoreError> {
        let live = self.store().live_handovers().await?;
        let mut tried = 0;
        let mut left = 0;
        for id in live {
            let driven = self
                .drivers()
                .get(&id)
                .is_some_and(|d| !d.task.is_finished());
            if driven {
                continue;
            }
            match self.take_room() {
                Some(room) => {
                    self.drive(id, false, room);
                    tried += 1;
                }
                None => left += 1,
            }
        }
        if left > 0 {
            // Some of them may be driven by other instances: this one cannot tell without
            // trying, so it says what it left, not that they wait.
            tracing::info!(
                left,
                max_live = self.max_live(),
                "at capacity: live handovers not driven here were not tried"
            );
        }
        Ok(tried)
    }

    /// Scans every `interval` until shutdown.
    pub fn spawn_scanner(&self, interval: Duration) -> JoinHandle<()> {
        let runtime = self.clone();
        let mut stop = self.inner.shutdown.subscribe();
        tokio::spawn(async move {
            loop {
                if let Err(error) = runtime.scan().await {
                    tracing::warn!(%error, "scanning for handovers to drive failed");
                }
                tokio::select! {
                    () = tokio::time::sleep(interval) => {}
                    () = stopped(&mut stop) => return,
                }
            }
        })
    }

    /// Stops every driver at once, as a crash would: no lease is released, nothing is
    /// flushed (tests use it to play `kill -9`).
    pub fn abort_all(&self) {
        for (_, driver) in self.drivers().drain() {
            driver.task.abort();
        }
    }

    /// Stops every driver: each releases its lease (so another instance takes over at once)
    /// and closes its streams. Waits at most `limit`.
    pub async fn shutdown(&self, limit: Duration) {
        let _ = self.inner.shutdown.send(true);
        let tasks: Vec<JoinHandle<()>> = self.drivers().drain().map(|(_, d)| d.task).collect();
        let all = futures_join(tasks);
        if tokio::time::timeout(limit, all).await.is_err() {
            tracing::warn!("some drivers did not stop in time");
        }
    }

    fn salesforce(&self, deployment: Option<&str>) -> Option<Arc<dyn SalesforcePort>> {
        let name = deployment.unwrap_or(&self.inner.parts.default_deployment);
        self.inner.parts.deployments.get(name).cloned()
    }
}

async fn futures_join(tasks: Vec<JoinHandle<()>>) {
    for task in tasks {
        let _ = task.await;
    }
}

/// Something that happened while the driver waited. Sent boxed: a channel keeps blocks of 32
/// slots of its item type, and an `Input` inline would make each driver's block ~8 KiB.
enum Event {
    /// An input, and the call it completes (if it is a call's result).
    Input(Input, Option<CallId>),
}

/// What a driver remembers about calls in flight, for metrics.
#[derive(Default)]
struct InFlight {
    /// Agent entries seen on the stream, for relay latency.
    entries: HashMap<EntryId, Instant>,
    /// User texts taken in, for relay latency, oldest first.
    texts: HashMap<String, VecDeque<Instant>>,
    /// Calls executed: what they carry for latency, and whether they count in the outbox.
    calls: HashMap<CallId, CallInfo>,
}

impl InFlight {
    /// Past this many remembered entries or texts, those older than [`Self::FORGET_AFTER`]
    /// are forgotten: an entry the core never relays (a duplicate seen again, say) or a text
    /// whose send failed would otherwise be kept for the handover's whole life.
    const PRUNE_ABOVE: usize = 64;
    const FORGET_AFTER: Duration = Duration::from_secs(300);

    fn prune(&mut self, now: Instant) {
        let fresh = |at: &Instant| now.saturating_duration_since(*at) < Self::FORGET_AFTER;
        if self.entries.len() > Self::PRUNE_ABOVE {
            self.entries.retain(|_, seen| fresh(seen));
        }
        if self.texts.len() > Self::PRUNE_ABOVE {
            self.texts.retain(|_, taken| {
                taken.retain(|at| fresh(at));
                !taken.is_empty()
            });
        }
    }
}

enum CallInfo {
    Notify(Option<EntryId>),
    Inject,
    Text(String),
    Other,
}

struct Stop;

async fn drive(runtime: Runtime, id: HandoverId, wake: Arc<Notify>, fresh: bool, room: Room) {
    // Held until the driver ends, however it ends.
    let _room = room;
    let parts = &runtime.inner.parts;
    let ttl = parts.lease_ttl;
    let lease = match parts
        .store
        .acquire_lease(id, &parts.owner, now(), ttl)
        .await
    {
        Ok(Some(lease)) => lease,
        Ok(None) => return,
        Err(error) => {
            tracing::warn!(handover = %id, %error, "could not take the lease");
            return;
        }
    };
    // The task keeps the largest state of this future for the handover's whole life. Loading
    // and finishing each hold a `Running` of their own, so they run boxed: the resident task
    // is then one `Running` and the loop's state (3.4 KiB instead of 8 KiB).
    let mut driver = match Box::pin(Running::load(&runtime, id, lease, fresh)).await {
        Ok(driver) => driver,
        Err(error) => {
            tracing::error!(handover = %id, %error, "could not load the handover");
            return;
        }
    };
    let result = driver.run(wake).await;
    Box::pin(driver.finish(result.is_ok())).await;
}

struct Running {
    runtime: Runtime,
    id: HandoverId,
    session: Session,
    address: BotAddress,
    version: handover_core::ports::Version,
    lease: Lease,
    salesforce: Arc<dyn SalesforcePort>,
    events_tx: mpsc::UnboundedSender<Box<Event>>,
    events: mpsc::UnboundedReceiver<Box<Event>>,
    stream: Option<(CallId, JoinHandle<()>)>,
    inputs: Vec<Input>,
    done: Vec<CallId>,
    inbox_through: Option<u64>,
    phase: Option<Phase>,
    in_flight: InFlight,
    retry_commands: Vec<Command>,
}

impl Running {
    async fn load(
        runtime: &Runtime,
        id: HandoverId,
        lease: Lease,
        fresh: bool,
    ) -> Result<Self, StoreError> {
        let store = &runtime.inner.parts.store;
        let stored = store.load(id).await?.ok_or(StoreError::NotFound(id))?;
        let salesforce = runtime
            .salesforce(stored.session.deployment())
            .ok_or_else(|| {
                StoreError::Corrupt(format!(
                    "handover {id} names deployment {:?}, which is not configured",
                    stored.session.deployment()
                ))
            })?;
        let (events_tx, events) = mpsc::unbounded_channel();
        let started = stored.session.phase() != Phase::Requested;
        let mut running = Self {
            runtime: runtime.clone(),
            id,
            session: stored.session,
            address: stored.address,
            version: stored.version,
            lease,
            salesforce,
            events_tx,
            events,
            stream: None,
            inputs: Vec::new(),
            done: Vec::new(),
            inbox_through: None,
            phase: None,
            in_flight: InFlight::default(),
            retry_commands: Vec::new(),
        };
        if fresh || !started {
            running.inputs.push(Input::Start);
        } else {
            running.inputs.push(Input::Resumed);
            // Commands committed but not done: run them again (same ids, so nothing doubles).
            running.retry_commands = store.pending_commands(id).await?;
        }
        Ok(running)
    }

    fn parts(&self) -> &Parts {
        &self.runtime.inner.parts
    }

    async fn run(&mut self, wake: Arc<Notify>) -> Result<(), Stop> {
        let ttl = self.parts().lease_ttl;
        let renew_every = ttl / 3;
        let mut next_renewal = tokio::time::Instant::now() + renew_every;
        let mut stop = self.runtime.inner.shutdown.subscribe();
        let mut read_inbox = true;
        let mut next_inbox_poll = tokio::time::Instant::now() + self.parts().inbox_poll;
        for command in std::mem::take(&mut self.retry_commands) {
            self.execute(command);
        }
        loop {
            if read_inbox {
                self.read_inbox().await?;
                read_inbox = false;
            }
            self.step().await?;
            if self.session.is_finished() {
                return Ok(());
            }
            let deadline = self.session.poll_timeout().map(|(at, _)| at);
            let sleep = deadline.map_or(Duration::from_secs(3600), |at| {
                Duration::from_millis(at.as_unix_millis().saturating_sub(now().as_unix_millis()))
            });
            tokio::select! {
                event = self.events.recv() => {
                    if let Some(event) = event {
                        self.take(*event);
                    }
                    while let Ok(event) = self.events.try_recv() {
                        self.take(*event);
                    }
                }
                () = wake.notified() => read_inbox = true,
                () = tokio::time::sleep(sleep) => self.inputs.push(Input::Timeout),
                () = tokio::time::sleep_until(next_inbox_poll) => {
                    read_inbox = true;
                    next_inbox_poll = tokio::time::Instant::now() + self.parts().inbox_poll;
                }
                () = tokio::time::sleep_until(next_renewal) => {
                    next_renewal = tokio::time::Instant::now() + renew_every;
                    self.renew().await?;
                }
                () = stopped(&mut stop) => return Err(Stop),
            }
        }
    }

    fn take(&mut self, event: Event) {
        let Event::Input(input, done) = event;
        if let Some(call) = done {
            self.done.push(call);
        }
        self.inputs.push(input);
    }

    async fn read_inbox(&mut self) -> Result<(), Stop> {
        match self.parts().store.pending_inputs(self.id).await {
            Ok(inputs) => {
                for (position, input) in inputs {
                    if self
                        .inbox_through
                        .is_some_and(|through| position <= through)
                    {
                        continue;
                    }
                    self.inbox_through = Some(position);
                    self.inputs.push(input);
                }
                Ok(())
            }
            Err(error) => {
                tracing::warn!(handover = %self.id, %error, "reading the inbox failed; retrying later");
                Ok(())
            }
        }
    }

    async fn renew(&mut self) -> Result<(), Stop> {
        let parts = self.parts();
        match parts
            .store
            .renew_lease(self.id, &self.lease, now(), parts.lease_ttl)
            .await
        {
            Ok(lease) => {
                self.lease = lease;
                Ok(())
            }
            Err(StoreError::Fenced) => {
                tracing::warn!(handover = %self.id, "lost the lease; another instance drives it now");
                Err(Stop)
            }
            Err(error) => {
                tracing::warn!(handover = %self.id, %error, "renewing the lease failed; retrying");
                Ok(())
            }
        }
    }

    /// Feeds what was gathered, commits, then executes.
    async fn step(&mut self) -> Result<(), Stop> {
        if self.inputs.is_empty() && self.done.is_empty() && self.inbox_through.is_none() {
            return Ok(());
        }
        let mut commands = Vec::new();
        for input in std::mem::take(&mut self.inputs) {
            self.note_input(&input);
            commands.extend(self.session.handle(input, now()));
        }
        let mut delay = Duration::from_millis(100);
        loop {
            let commit = Commit {
                session: &self.session,
                expected: self.version,
                fencing: self.lease.fencing,
                outbox: &commands,
                done: &self.done,
                inbox_through: self.inbox_through,
                now: now(),
            };
            match self.parts().store.commit(commit).await {
                Ok(version) => {
                    self.version = version;
                    break;
                }
                Err(
                    error @ (StoreError::Fenced
                    | StoreError::Conflict { .. }
                    | StoreError::NotFound(_)),
                ) => {
                    tracing::warn!(handover = %self.id, %error, "stopped: the handover is driven elsewhere now");
                    return Err(Stop);
                }
                Err(error) => {
                    tracing::warn!(handover = %self.id, %error, "committing failed; retrying before acting");
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(Duration::from_secs(5));
                    if self.runtime.is_stopping() {
                        return Err(Stop);
                    }
                }
            }
        }
        self.done.clear();
        // The commit deleted the applied inputs: later reads only see newer ones.
        self.inbox_through = None;
        self.track_phase();
        for command in commands {
            self.execute(command);
        }
        Ok(())
    }

    fn track_phase(&mut self) {
        let phase = self.session.phase();
        if self.phase != Some(phase) {
            let metrics = self.runtime.metrics();
            if let Some(old) = self.phase {
                metrics.handovers.get_or_create(&label(old)).dec();
            }
            metrics.handovers.get_or_create(&label(phase)).inc();
            self.phase = Some(phase);
        }
    }

    fn note_input(&mut self, input: &Input) {
        let now = Instant::now();
        match input {
            Input::Stream {
                event: StreamEvent::Entry { entry, .. },
                ..
            } if entry.sender.role.is_relayed() => {
                self.in_flight
                    .entries
                    .entry(entry.identifier.clone())
                    .or_insert(now);
                self.in_flight.prune(now);
            }
            Input::UserMessage(message) if !message.text.is_empty() => {
                self.in_flight
                    .texts
                    .entry(message.text.clone())
                    .or_default()
                    .push_back(now);
                self.in_flight.prune(now);
            }
            Input::Salesforce { call, result } => self.completed(*call, result.is_ok()),
            Input::Bot { call, result } => self.completed(*call, result.is_ok()),
            Input::Start
            | Input::UserMessage(_)
            | Input::UserConnected
            | Input::UserDisconnected
            | Input::UserTyping { .. }
            | Input::UserCancelled
            | Input::FlowClosed
            | Input::Stream { .. }
            | Input::Timeout
            | Input::Resumed => {}
        }
        if self.parts().log_text {
            tracing::debug!(handover = %self.id, ?input, "input");
        } else {
            tracing::debug!(handover = %self.id, input = input_kind(input), "input");
        }
    }

    fn completed(&mut self, call: CallId, ok: bool) {
        let Some(info) = self.in_flight.calls.remove(&call) else {
            return;
        };
        let metrics = self.runtime.metrics().clone();
        metrics.outbox_depth.dec();
        match info {
            CallInfo::Notify(entry) => {
                if !ok {
                    metrics
                        .bot_delivery_failures
                        .get_or_create(&Metrics::kind("notify"))
                        .inc();
                }
                if let Some(seen) = entry
                    .and_then(|e| self.in_flight.entries.remove(&e))
                    .filter(|_| ok)
                {
                    metrics
                        .relay_seconds
                        .get_or_create(&Direction {
                            direction: "to_user".to_owned(),
                        })
                        .observe(seen.elapsed().as_secs_f64());
                }
            }
            CallInfo::Inject => {
                if !ok {
                    metrics
                        .bot_delivery_failures
                        .get_or_create(&Metrics::kind("inject"))
                        .inc();
                }
            }
            CallInfo::Text(text) if ok => {
                let texts = &mut self.in_flight.texts;
                let taken = texts.get_mut(&text).and_then(VecDeque::pop_front);
                if texts.get(&text).is_some_and(VecDeque::is_empty) {
                    texts.remove(&text);
                }
                if let Some(taken) = taken {
                    metrics
                        .relay_seconds
                        .get_or_create(&Direction {
                            direction: "to_agent".to_owned(),
                        })
                        .observe(taken.elapsed().as_secs_f64());
                }
            }
            CallInfo::Text(_) | CallInfo::Other => {}
        }
    }

    fn execute(&mut self, command: Command) {
        match command {
            Command::Record(observation) => self.record(&observation),
            Command::Bot(call) => {
                let info = match &call.delivery {
                    BotDelivery::Notify(Notification::Agent(AgentMessage { entry, .. })) => {
                        CallInfo::Notify(Some(entry.clone()))
                    }
                    BotDelivery::Notify(Notification::Notice { .. })
                    | BotDelivery::Typing { .. } => CallInfo::Notify(None),
                    BotDelivery::Inject(_) => CallInfo::Inject,
                };
                self.in_flight.calls.insert(call.id, info);
                self.runtime.metrics().outbox_depth.inc();
                let bot = self.parts().bot.clone();
                let address = self.address.clone();
                let events = self.events_tx.clone();
                tokio::spawn(async move {
                    let result = bot.deliver(&address, &call.delivery).await;
                    let _ = events.send(Box::new(Event::Input(
                        Input::Bot {
                            call: call.id,
                            result,
                        },
                        Some(call.id),
                    )));
                });
            }
            Command::Salesforce(call) => match &call.request {
                SalesforceRequest::OpenStream { last_event_id } => {
                    if let Some((_, old)) = self.stream.take() {
                        old.abort();
                    }
                    let Some(credential) = call.credential.clone() else {
                        return;
                    };
                    let salesforce = self.salesforce.clone();
                    let events = self.events_tx.clone();
                    let last = last_event_id.clone();
                    let stream_call = call.id;
                    let task = tokio::spawn(async move {
                        // `false` once the driver is gone: stop reading.
                        let send = |event| {
                            events
                                .send(Box::new(Event::Input(
                                    Input::Stream {
                                        stream: stream_call,
                                        event,
                                    },
                                    None,
                                )))
                                .is_ok()
                        };
                        match salesforce.open_stream(&credential, last.as_ref()).await {
                            Ok(mut stream) => {
                                if !send(StreamEvent::Opened) {
                                    return;
                                }
                                while let Some(event) = stream.next_event().await {
                                    if !send(event) {
                                        return;
                                    }
                                }
                                send(StreamEvent::Closed(StreamClosed::Dropped));
                            }
                            Err(CallFailure::Unauthorized) => {
                                send(StreamEvent::Closed(StreamClosed::Unauthorized));
                            }
                            Err(_) => {
                                send(StreamEvent::Closed(StreamClosed::Dropped));
                            }
                        }
                    });
                    self.stream = Some((call.id, task));
                }
                SalesforceRequest::CloseStream => {
                    if let Some((_, old)) = self.stream.take() {
                        old.abort();
                    }
                    let _ = self.events_tx.send(Box::new(Event::Input(
                        Input::Salesforce {
                            call: call.id,
                            result: Ok(SalesforceResponse::Done),
                        },
                        Some(call.id),
                    )));
                }
                SalesforceRequest::MintToken(_)
                | SalesforceRequest::RenewToken(_)
                | SalesforceRequest::ContinueToken
                | SalesforceRequest::CreateConversation { .. }
                | SalesforceRequest::SendMessage { .. }
                | SalesforceRequest::SendTyping { .. }
                | SalesforceRequest::Acknowledge { .. }
                | SalesforceRequest::ListEntries { .. }
                | SalesforceRequest::FetchRoutingStatus { .. }
                | SalesforceRequest::CloseConversation { .. }
                | SalesforceRequest::RevokeToken => {
                    let info = match &call.request {
                        SalesforceRequest::SendMessage { message, .. } => match &message.body {
                            OutboundBody::Text(text) => CallInfo::Text(text.clone()),
                            OutboundBody::File(_) => CallInfo::Other,
                        },
                        SalesforceRequest::MintToken(_)
                        | SalesforceRequest::RenewToken(_)
                        | SalesforceRequest::ContinueToken
                        | SalesforceRequest::OpenStream { .. }
                        | SalesforceRequest::CloseStream
                        | SalesforceRequest::CreateConversation { .. }
                        | SalesforceRequest::SendTyping { .. }
                        | SalesforceRequest::Acknowledge { .. }
                        | SalesforceRequest::ListEntries { .. }
                        | SalesforceRequest::FetchRoutingStatus { .. }
                        | SalesforceRequest::CloseConversation { .. }
                        | SalesforceRequest::RevokeToken => CallInfo::Other,
                    };
                    self.in_flight.calls.insert(call.id, info);
                    self.runtime.metrics().outbox_depth.inc();
                    let salesforce = self.salesforce.clone();
                    let events = self.events_tx.clone();
                    tokio::spawn(async move {
                        let result = salesforce
                            .execute(call.credential.as_ref(), &call.request)
                            .await;
                        let _ = events.send(Box::new(Event::Input(
                            Input::Salesforce {
                                call: call.id,
                                result,
                            },
                            Some(call.id),
                        )));
                    });
                }
            },
        }
    }

    fn record(&self, observation: &Observation) {
        let metrics = self.runtime.metrics();
        let kind = observation_kind(observation);
        metrics
            .observations
            .get_or_create(&Metrics::kind(kind))
            .inc();
        match observation {
            Observation::StreamReconnect { reason } => {
                metrics
                    .stream_reconnects
                    .get_or_create(&Metrics::kind(&format!("{reason:?}").to_lowercase()))
                    .inc();
            }
            Observation::Backfilled { new_entries } => {
                metrics
                    .backfilled_entries
                    .inc_by(u64::try_from(*new_entries).unwrap_or(0));
            }
            Observation::DuplicateEntry => {
                metrics.duplicates_suppressed.inc();
            }
            Observation::TokenRenewed | Observation::TokenContinued => {
                metrics.token_renewals.inc();
            }
            Observation::EntriesMissed { missed } => {
                tracing::warn!(
                    handover = %self.id,
                    conversation = %self.session.conversation_id(),
                    from_ms = missed.from.as_unix_millis(),
                    to_ms = missed.to.as_unix_millis(),
                    "Salesforce's entries list could not be paged through in full: entries in this \
                     stretch may not have reached the user (reported in the outcome)"
                );
            }
            Observation::BackfillIncomplete => {
                tracing::warn!(
                    handover = %self.id,
                    conversation = %self.session.conversation_id(),
                    "a backfill did not reach back to the previous one within its page limit; \
                     it relayed what it found, and the next one tries again"
                );
            }
            Observation::HoldReleased { entries } => {
                tracing::info!(
                    handover = %self.id,
                    entries,
                    "stream entries relayed without the listing that orders them (it was late \
                     or failed); anything it finds comes late"
                );
            }
            Observation::DuplicateUserMessage
            | Observation::UnknownEvent { .. }
            | Observation::UnknownEntryType { .. }
            | Observation::MalformedEvent { .. }
            | Observation::EmptyAgentMessage
            | Observation::ForeignConversation
            | Observation::IgnoredAfterEnd
            | Observation::StaleResult
            | Observation::VerifiedFallbackToGuest
            | Observation::Resumed
            | Observation::TokenUnusable
            | Observation::PacingDelay
            | Observation::MessageRefused { .. }
            | Observation::FileSentAsLink
            | Observation::OwnEcho { .. }
            | Observation::BotDeliveryFailed { .. }
            | Observation::BestEffortFailed
            | Observation::CloseSkipped
            | Observation::Ignored { .. } => {}
        }
        tracing::debug!(handover = %self.id, observation = kind, "observed");
    }

    /// Leaves: releases the lease and closes the stream.
    async fn finish(mut self, finished: bool) {
        if let Some((_, stream)) = self.stream.take() {
            stream.abort();
        }
        let metrics = self.runtime.metrics().clone();
        if let Some(phase) = self.phase {
            metrics.handovers.get_or_create(&label(phase)).dec();
        }
        if finished
            && let Some(outcome) = self.session.outcome()
            && outcome.reason == EndReason::TokenExpired
        {
            metrics.grace_terminations.inc();
        }
        for _ in self.in_flight.calls.drain() {
            metrics.outbox_depth.dec();
        }
        let parts = self.parts();
        if let Err(error) = parts.store.release_lease(self.id, &self.lease).await {
            tracing::warn!(handover = %self.id, %error, "releasing the lease failed; it lapses by itself");
        }
        // The reason only: a detail can quote Salesforce's or Cognigy's answer.
        let outcome = self.session.outcome().map(|o| o.reason.as_str());
        tracing::info!(handover = %self.id, finished, phase = self.session.phase().as_str(), outcome, "driver stopped");
    }
}

impl Drop for Running {
    /// However the driver ends (even aborted), its stream connection goes with it.
    fn drop(&mut self) {
        if let Some((_, stream)) = self.stream.take() {
            stream.abort();
        }
    }
}

fn label(phase: Phase) -> PhaseLabel {
    PhaseLabel {
        phase: phase.as_str().to_owned(),
    }
}

fn input_kind(input: &Input) -> &'static str {
    match input {
        Input::Start => "start",
        Input::UserMessage(_) => "user-message",
        Input::UserConnected => "user-connected",
        Input::UserDisconnected => "user-disconnected",
        Input::UserTyping { .. } => "user-typing",
        Input::UserCancelled => "user-cancelled",
        Input::FlowClosed => "flow-closed",
        Input::Salesforce { .. } => "salesforce-result",
        Input::Stream { .. } => "stream-event",
        Input::Bot { .. } => "bot-result",
        Input::Timeout => "timeout",
        Input::Resumed => "resumed",
    }
}

fn observation_kind(observation: &Observation) -> &'static str {
    match observation {
        Observation::DuplicateEntry => "duplicate_entry",
        Observation::DuplicateUserMessage => "duplicate_user_message",
        Observation::UnknownEvent { .. } => "unknown_event",
        Observation::UnknownEntryType { .. } => "unknown_entry_type",
        Observation::MalformedEvent { .. } => "malformed_event",
        Observation::EmptyAgentMessage => "empty_agent_message",
        Observation::ForeignConversation => "foreign_conversation",
        Observation::IgnoredAfterEnd => "ignored_after_end",
        Observation::StaleResult => "stale_result",
        Observation::VerifiedFallbackToGuest => "verified_fallback_to_guest",
        Observation::StreamReconnect { .. } => "stream_reconnect",
        Observation::BackfillIncomplete => "backfill_incomplete",
        Observation::Backfilled { .. } => "backfilled",
        Observation::HoldReleased { .. } => "hold_released",
        Observation::EntriesMissed { .. } => "entries_missed",
        Observation::Resumed => "resumed",
        Observation::TokenRenewed => "token_renewed",
        Observation::TokenContinued => "token_continued",
        Observation::TokenUnusable => "token_unusable",
        Observation::PacingDelay => "pacing_delay",
        Observation::MessageRefused { .. } => "message_refused",
        Observation::FileSentAsLink => "file_sent_as_link",
        Observation::OwnEcho { .. } => "own_echo",
        Observation::BotDeliveryFailed { .. } => "bot_delivery_failed",
        Observation::BestEffortFailed => "best_effort_failed",
        Observation::CloseSkipped => "close_skipped",
        Observation::Ignored { .. } => "ignored",
    }
}
