//! Pacing of token requests: Salesforce allows 200 per org and minute, counted across every
//! deployment of the org and every instance of the bridge. A burst of handovers must queue for
//! its tokens instead of running into 429s, and a lost instance must not take a share of the
//! budget with it.
//!
//! [`TokenPacer`] gives each token request its turn, evenly spaced at the configured rate.
//! Alone it keeps the schedule in memory. Given [`SharedSlots`] (the app passes its
//! PostgreSQL store), every instance books its turns in one schedule per org, so the rate holds
//! for the fleet and whichever instances are alive use all of it.
//!
//! An instance books one slot at a time: the next request in its own queue books only once the
//! previous one's slot has come. So the shared schedule never runs far ahead, busy instances
//! alternate, and a request that gives up while queued has booked nothing. It also lets a
//! renewal go first: a live handover whose token expires or was refused has its grace period
//! running and maybe an agent waiting, while a new handover only waits a little longer.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use async_trait::async_trait;

/// A schedule of evenly spaced slots kept outside the process and shared by every instance.
#[async_trait]
pub trait SharedSlots: Send + Sync + 'static {
    /// Books the next free slot of `key`, at least `interval` after the one booked before it
    /// by anyone, and returns how long from now it is.
    async fn reserve(&self, key: &str, interval: Duration) -> Result<Duration, String>;
}

/// Which queue a token request waits in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Turn {
    /// The first token of a new handover.
    First,
    /// A new token for a live handover: goes ahead of every `First` waiting.
    Renewal,
}

/// Gives token requests their turn at `per_minute`, evenly spaced. Idle, a request goes at once.
/// Share one pacer between the clients of deployments in the same org.
pub struct TokenPacer {
    interval: Duration,
    key: String,
    shared: Option<Arc<dyn SharedSlots>>,
    /// Held from booking a slot until it comes: one booking per instance at a time. The value
    /// is the next local slot, used when there is no shared schedule or it cannot be reached.
    turn: tokio::sync::Mutex<tokio::time::Instant>,
    /// Renewals waiting; `First` requests stand aside while there are any.
    renewals: AtomicUsize,
    renewal_done: tokio::sync::Notify,
}

impl std::fmt::Debug for TokenPacer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenPacer")
            .field("interval", &self.interval)
            .field("key", &self.key)
            .field("shared", &self.shared.is_some())
            .finish_non_exhaustive()
    }
}

impl TokenPacer {
    /// A pacer for this process alone.
    pub fn local(per_minute: u32) -> Self {
        Self::new(per_minute, String::new(), None)
    }

    /// A pacer booking its turns in `slots` under `key` (the org id), at `per_minute` for
    /// every instance together.
    pub fn shared(per_minute: u32, key: impl Into<String>, slots: Arc<dyn SharedSlots>) -> Self {
        Self::new(per_minute, key.into(), Some(slots))
    }

    fn new(per_minute: u32, key: String, shared: Option<Arc<dyn SharedSlots>>) -> Self {
        Self {
            interval: Duration::from_secs(60) / per_minute.max(1),
            key,
            shared,
            turn: tokio::sync::Mutex::new(tokio::time::Instant::now()),
            renewals: AtomicUsize::new(0),
            renewal_done: tokio::sync::Notify::new(),
        }
    }

    /// Waits for this request's turn: renewals in the order they came, then first tokens in
    /// the order they came (a first token that stood aside for a renewal queues again).
    pub async fn wait_turn(&self, turn: Turn) {
        let _renewal = (turn == Turn::Renewal).then(|| WaitingRenewal::new(self));
        let mut next_local = loop {
            // Registered before the check, so a renewal finishing in between still wakes it.
            let renewal_done = self.renewal_done.notified();
            let next_local = self.turn.lock().await;
            if turn == Turn::Renewal || self.renewals.load(Ordering::SeqCst) == 0 {
                break next_local;
            }
            drop(next_local);
            renewal_done.await;
        };
        let now = tokio::time::Instant::now();
        let slot = match &self.shared {
            Some(shared) => match shared.reserve(&self.key, self.interval).await {
                Ok(wait) => now + wait,
                Err(error) => {
                    tracing::warn!(
                        %error,
                        "the shared token-request schedule could not be reached; pacing locally"
                    );
                    (*next_local).max(now)
                }
            },
            None => (*next_local).max(now),
        };
        *next_local = slot + self.interval;
        tokio::time::sleep_until(slot).await;
    }
}

/// A renewal counted as waiting until its turn has come or it was given up (dropped).
struct WaitingRenewal<'a>(&'a TokenPacer);

impl<'a> WaitingRenewal<'a> {
    fn new(pacer: &'a TokenPacer) -> Self {
        pacer.renewals.fetch_add(1, Ordering::SeqCst);
        Self(pacer)
    }
}

impl Drop for WaitingRenewal<'_> {
    fn drop(&mut self) {
        self.0.renewals.fetch_sub(1, Ordering::SeqCst);
        self.0.renewal_done.notify_waiters();
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};
    use std::time::Duration;

    use async_trait::async_trait;

    use super::{SharedSlots, TokenPacer, Turn};

    /// A shared schedule in memory on the virtual clock, standing in for the store: it counts
    /// bookings, and fails while `down` is set.
    #[derive(Default)]
    struct Schedule {
        next: Mutex<Option<tokio::time::Instant>>,
        bookings: Mutex<Vec<String>>,
        down: std::sync::atomic::AtomicBool,
    }

    #[async_trait]
    impl SharedSlots for Schedule {
        async fn reserve(&self, key: &str, interval: Duration) -> Result<Duration, String> {
            if self.down.load(std::sync::atomic::Ordering::SeqCst) {
                return Err("connection refused".to_owned());
            }
            self.bookings.lock().unwrap().push(key.to_owned());
            let now = tokio::time::Instant::now();
            let mut next = self.next.lock().unwrap();
            let slot = next.map_or(now, |next| next.max(now));
            *next = Some(slot + interval);
            Ok(slot - now)
        }
    }

    async fn burst(pacers: &[Arc<TokenPacer>], each: usize) -> Vec<Duration> {
        let start = tokio::time::Instant::now();
        let mut tasks = Vec::new();
        for pacer in pacers {
            for _ in 0..each {
                let pacer = pacer.clone();
                tasks.push(tokio::spawn(async move {
                    pacer.wait_turn(Turn::First).await;
                    start.elapsed()
                }));
            }
        }
        let mut slots = Vec::new();
        for task in tasks {
            slots.push(task.await.unwrap());
        }
        slots.sort();
        slots
    }

    // Virtual time (paused): the slots are exact, so this checks the spacing, not speed.
    #[tokio::test(start_paused = true)]
    async fn mints_are_spaced_at_the_rate_and_an_idle_one_goes_at_once() {
        let pacer = Arc::new(TokenPacer::local(60));
        assert_eq!(
            burst(std::slice::from_ref(&pacer), 5).await,
            [0, 1, 2, 3, 4].map(Duration::from_secs),
            "a burst queues one second apart at 60 a minute, the first at once"
        );
        tokio::time::sleep(Duration::from_secs(30)).await;
        let before = tokio::time::Instant::now();
        pacer.wait_turn(Turn::First).await;
        assert_eq!(before.elapsed(), Duration::ZERO, "idle again: at once");
    }

    #[tokio::test(start_paused = true)]
    async fn two_instances_sharing_a_schedule_keep_the_rate_together_and_one_alone_gets_all_of_it()
    {
        let schedule = Arc::new(Schedule::default());
        let a = Arc::new(TokenPacer::shared(60, "00D", schedule.clone()));
        let b = Arc::new(TokenPacer::shared(60, "00D", schedule.clone()));
        assert_eq!(
            burst(&[a.clone(), b.clone()], 3).await,
            [0, 1, 2, 3, 4, 5].map(Duration::from_secs),
            "six requests from two instances: one a second between them, not two"
        );
        assert_eq!(schedule.bookings.lock().unwrap().len(), 6);
        assert!(
            schedule
                .bookings
                .lock()
                .unwrap()
                .iter()
                .all(|key| key == "00D")
        );
        // b is gone: a alone gets the whole rate, not half of it.
        drop(b);
        tokio::time::sleep(Duration::from_secs(10)).await;
        assert_eq!(burst(&[a], 4).await, [0, 1, 2, 3].map(Duration::from_secs));
    }

    #[tokio::test(start_paused = true)]
    async fn an_unreachable_schedule_falls_back_to_local_pacing() {
        let schedule = Arc::new(Schedule::default());
        schedule
            .down
            .store(true, std::sync::atomic::Ordering::SeqCst);
        let pacer = Arc::new(TokenPacer::shared(30, "00D", schedule.clone()));
        assert_eq!(
            burst(std::slice::from_ref(&pacer), 3).await,
            [0, 2, 4].map(Duration::from_secs),
            "still spaced, at the same rate"
        );
        assert!(schedule.bookings.lock().unwrap().is_empty());
    }

    #[tokio::test(start_paused = true)]
    async fn a_renewal_goes_ahead_of_first_tokens_already_waiting() {
        let pacer = Arc::new(TokenPacer::local(60));
        let start = tokio::time::Instant::now();
        let request = |turn: Turn, name: &'static str| {
            let pacer = pacer.clone();
            tokio::spawn(async move {
                pacer.wait_turn(turn).await;
                (start.elapsed(), name)
            })
        };
        let mut tasks = vec![
            request(Turn::First, "first a"),
            request(Turn::First, "first b"),
            request(Turn::First, "first c"),
            request(Turn::First, "first d"),
        ];
        tokio::time::sleep(Duration::from_millis(500)).await;
        tasks.push(request(Turn::Renewal, "renewal"));
        let mut order = Vec::new();
        for task in tasks {
            let done = tokio::time::timeout(Duration::from_secs(60), task).await;
            order.push(done.expect("every request gets its turn").unwrap());
        }
        order.sort();
        assert_eq!(
            order,
            [
                (Duration::from_secs(0), "first a"),
                (Duration::from_secs(1), "first b"),
                (Duration::from_secs(2), "renewal"),
                (Duration::from_secs(3), "first c"),
                (Duration::from_secs(4), "first d"),
            ],
            "the renewal waits only for the slot being waited for when it came"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_renewal_given_up_while_waiting_does_not_hold_first_tokens_back() {
        let pacer = Arc::new(TokenPacer::local(60));
        let start = tokio::time::Instant::now();
        let request = |turn: Turn| {
            let pacer = pacer.clone();
            tokio::spawn(async move {
                pacer.wait_turn(turn).await;
                start.elapsed()
            })
        };
        let a = request(Turn::First);
        let b = request(Turn::First);
        tokio::task::yield_now().await; // a has gone, b sleeps until its slot at 1 s
        let renewal = request(Turn::Renewal);
        tokio::task::yield_now().await;
        let c = request(Turn::First);
        tokio::task::yield_now().await;
        renewal.abort(); // the caller gave up before its turn came
        let c = tokio::time::timeout(Duration::from_secs(60), c)
            .await
            .expect("the first token is not held back by a renewal that is gone")
            .unwrap();
        assert_eq!(
            (a.await.unwrap(), b.await.unwrap(), c),
            (
                Duration::ZERO,
                Duration::from_secs(1),
                Duration::from_secs(2)
            )
        );
    }
}
