//! SQLite's one writer: a thread of its own, with group commit.
//!
//! SQLite lets one connection write at a time. When several pooled connections tried, the
//! losers waited in SQLite's busy handler, which sleeps in steps of up to 100 ms, and each
//! winner paid its own `fsync`. And through sqlx every statement is a round trip between a
//! tokio worker and the connection's own thread: two context switches a statement, which was
//! most of the bridge's CPU under load (see `docs/benchmarks.md`).
//!
//! So every write goes to one thread that owns the one writing connection (rusqlite, on the
//! same SQLite library sqlx links). It takes the jobs queued at that moment (up to [`BATCH`]),
//! runs each in its own savepoint inside one `BEGIN IMMEDIATE` transaction, synchronously with
//! cached statements, and commits them together: one wake-up and one `fsync` for the batch.
//!
//! The batch changes no job's meaning:
//! - Jobs run one after another in arrival order, as if each were its own transaction.
//! - A job that fails is rolled back to its savepoint alone. The others still commit, and
//!   the failed job gets its own error.
//! - No job's result is given out before the batch's `COMMIT` has succeeded. If the
//!   transaction fails (begin, a savepoint, or the commit), every job in it gets
//!   [`StoreError::Unavailable`] and nothing of the batch was written. The caller retries,
//!   as after any outage.
//!
//! Reads do not come here. WAL mode lets sqlx's pooled connections read beside the writer, and
//! they see every committed batch.

use std::path::PathBuf;
use std::sync::mpsc as std_mpsc;
use std::time::Duration;

use handover_core::ports::StoreError;
use rusqlite::Connection;
use tokio::sync::oneshot;

/// The most jobs one transaction takes. A batch holds the writer for the time its jobs run,
/// so the bound keeps a burst from delaying the first job's result without end.
pub(crate) const BATCH: usize = 256;

/// The most jobs that may wait for the writer. A caller past it waits for room: back
/// pressure, not an error.
const QUEUE: usize = 4096;

/// A job whose result waits for the batch's commit.
trait Settle: Send {
    fn succeeded(&self) -> bool;
    /// Hands the result out; `committed` is how the batch's transaction ended.
    fn settle(self: Box<Self>, committed: Result<(), StoreError>);
}

/// A queued job, its result type erased.
trait Job: Send {
    fn run(self: Box<Self>, conn: &Connection) -> Box<dyn Settle>;
    /// The job never ran: its transaction could not begin.
    fn abandon(self: Box<Self>, error: StoreError);
}

struct Queued<T, F> {
    work: F,
    reply: oneshot::Sender<Result<T, StoreError>>,
}

struct Ran<T> {
    result: Result<T, StoreError>,
    reply: oneshot::Sender<Result<T, StoreError>>,
}

impl<T, F> Job for Queued<T, F>
where
    T: Send + 'static,
    F: FnOnce(&Connection) -> Result<T, StoreError> + Send + 'static,
{
    fn run(self: Box<Self>, conn: &Connection) -> Box<dyn Settle> {
        let Self { work, reply } = *self;
        Box::new(Ran {
            result: work(conn),
            reply,
        })
    }

    fn abandon(self: Box<Self>, error: StoreError) {
        // A caller that stopped waiting is no one to tell.
        let _ = self.reply.send(Err(error));
    }
}

impl<T: Send> Settle for Ran<T> {
    fn succeeded(&self) -> bool {
        self.result.is_ok()
    }

    fn settle(self: Box<Self>, committed: Result<(), StoreError>) {
        let result = match (self.result, committed) {
            // A failed job wrote nothing either way: its own error is the truth.
            (Err(error), _) => Err(error),
            (Ok(value), Ok(())) => Ok(value),
            (Ok(_), Err(error)) => Err(error),
        };
        let _ = self.reply.send(result);
    }
}

/// The handle callers write through. Cloning shares the one writer; the thread ends when the
/// last handle is dropped.
#[derive(Clone)]
pub(crate) struct Writer {
    jobs: std_mpsc::SyncSender<Box<dyn Job>>,
}

impl std::fmt::Debug for Writer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Writer").finish_non_exhaustive()
    }
}

/// A rusqlite failure, without the values bound (rusqlite's messages never carry them).
pub(crate) fn failed(error: &rusqlite::Error) -> StoreError {
    StoreError::Unavailable(format!("SQLite: {error}"))
}

fn stopped() -> StoreError {
    StoreError::Unavailable("the SQLite writer has stopped".to_owned())
}

impl Writer {
    /// Opens the writing connection on `path` and starts the writer's thread.
    pub(crate) fn start(path: PathBuf) -> Result<Self, StoreError> {
        let conn = open(&path)?;
        let (jobs, queue) = std_mpsc::sync_channel(QUEUE);
        std::thread::Builder::new()
            .name("sqlite-writer".to_owned())
            .spawn(move || run(&path, conn, &queue))
            .map_err(|error| {
                StoreError::Unavailable(format!("the SQLite writer could not start: {error}"))
            })?;
        Ok(Self { jobs })
    }

    /// Runs `work` in the next batch and returns its result once the batch has committed. An
    /// `Err` from `work` rolls its statements back.
    pub(crate) async fn write<T, F>(&self, work: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T, StoreError> + Send + 'static,
    {
        let (reply, result) = oneshot::channel();
        let mut job: Box<dyn Job> = Box::new(Queued { work, reply });
        // The queue is large; when it is full, wait for room without blocking the runtime.
        loop {
            match self.jobs.try_send(job) {
                Ok(()) => break,
                Err(std_mpsc::TrySendError::Full(back)) => {
                    job = back;
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
                Err(std_mpsc::TrySendError::Disconnected(_)) => return Err(stopped()),
            }
        }
        result.await.map_err(|_| stopped())?
    }
}

fn open(path: &PathBuf) -> Result<Connection, StoreError> {
    let conn = Connection::open(path).map_err(|error| failed(&error))?;
    // Another process (an operator's tool) may hold the lock for a moment.
    conn.busy_timeout(Duration::from_secs(5))
        .map_err(|error| failed(&error))?;
    conn.set_prepared_statement_cache_capacity(64);
    // As sqlx's own connections have it, whatever the library was compiled with: a commit
    // is on disk when it returns.
    conn.execute_batch("PRAGMA synchronous = FULL; PRAGMA foreign_keys = ON;")
        .map_err(|error| failed(&error))?;
    Ok(conn)
}

fn run(path: &PathBuf, mut conn: Connection, queue: &std_mpsc::Receiver<Box<dyn Job>>) {
    let mut batch: Vec<Box<dyn Job>> = Vec::with_capacity(BATCH);
    while let Ok(first) = queue.recv() {
        batch.push(first);
        while batch.len() < BATCH {
            match queue.try_recv() {
                Ok(job) => batch.push(job),
                Err(_) => break,
            }
        }
        if let Err(error) = commit_batch(&conn, &mut batch) {
            tracing::warn!(%error, "a SQLite write batch failed; reopening the connection");
            // The connection may be in any state now.
            match open(path) {
                Ok(fresh) => conn = fresh,
                Err(error) => {
                    tracing::warn!(%error, "reopening SQLite failed; trying again at the next batch")
                }
            }
        }
    }
}

/// Runs and commits `batch` (emptying it); every job gets its result.
fn commit_batch(conn: &Connection, batch: &mut Vec<Box<dyn Job>>) -> Result<(), StoreError> {
    if let Err(error) = conn.execute_batch("BEGIN IMMEDIATE") {
        let error = failed(&error);
        for job in batch.drain(..) {
            job.abandon(error.clone());
        }
        return Err(error);
    }
    let mut ran: Vec<Box<dyn Settle>> = Vec::with_capacity(batch.len());
    let mut failure = None;
    let mut jobs = batch.drain(..);
    for job in jobs.by_ref() {
        if let Err(error) = conn.execute_batch("SAVEPOINT job") {
            let error = failed(&error);
            job.abandon(error.clone());
            failure = Some(error);
            break;
        }
        let done = job.run(conn);
        let ended = if done.succeeded() {
            conn.execute_batch("RELEASE job")
        } else {
            conn.execute_batch("ROLLBACK TO job; RELEASE job")
        };
        ran.push(done);
        if let Err(error) = ended {
            failure = Some(failed(&error));
            break;
        }
    }
    let committed = match failure {
        Some(error) => {
            for job in jobs {
                job.abandon(error.clone());
            }
            let _ = conn.execute_batch("ROLLBACK");
            Err(error)
        }
        None => conn.execute_batch("COMMIT").map_err(|error| {
            let _ = conn.execute_batch("ROLLBACK");
            failed(&error)
        }),
    };
    for done in ran {
        done.settle(committed.clone());
    }
    committed
}

#[cfg(test)]
mod tests {
    use std::future::Future;
    use std::sync::{Arc, Barrier};

    use super::*;

    fn writer_on_a_new_file(name: &str) -> (Writer, PathBuf) {
        let path =
            std::env::temp_dir().join(format!("handover-writer-{name}-{}.db", std::process::id()));
        for suffix in ["", "-wal", "-shm"] {
            let _ = std::fs::remove_file(format!("{}{suffix}", path.display()));
        }
        let setup = Connection::open(&path).unwrap();
        setup
            .execute_batch(
                "PRAGMA journal_mode = WAL; \
                 CREATE TABLE rows (k INTEGER NOT NULL, part INTEGER NOT NULL);",
            )
            .unwrap();
        (Writer::start(path.clone()).unwrap(), path)
    }

    fn insert(conn: &Connection, k: i64, part: i64) -> Result<(), StoreError> {
        conn.prepare_cached("INSERT INTO rows (k, part) VALUES (?1, ?2)")
            .and_then(|mut statement| statement.execute((k, part)))
            .map(|_| ())
            .map_err(|error| failed(&error))
    }

    fn rows(path: &PathBuf) -> Vec<(i64, i64)> {
        let reader = Connection::open(path).unwrap();
        let mut statement = reader
            .prepare("SELECT k, part FROM rows ORDER BY k, part")
            .unwrap();
        statement
            .query_map((), |row| Ok((row.get(0)?, row.get(1)?)))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap()
    }

    /// Queues `jobs` behind a job that holds the writer until they are all queued, so that
    /// they run as one batch: each writes two rows, and every odd one fails after its first.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_failed_job_in_a_batch_is_rolled_back_alone_and_the_others_commit() {
        let (writer, path) = writer_on_a_new_file("batch");
        let jobs = 100_i64;
        // The first job waits until every other job has been queued.
        let queued = Arc::new(Barrier::new(2));
        let (started, running) = oneshot::channel();
        let first = tokio::spawn({
            let writer = writer.clone();
            let queued = queued.clone();
            async move {
                writer
                    .write(move |conn| {
                        let _ = started.send(());
                        queued.wait();
                        insert(conn, -1, 0)
                    })
                    .await
            }
        });
        running.await.unwrap();
        let mut waiting = Vec::new();
        let mut sent = Vec::new();
        for k in 0..jobs {
            let writer = writer.clone();
            let (is_queued, queued_signal) = oneshot::channel::<()>();
            sent.push(queued_signal);
            waiting.push(tokio::spawn(async move {
                let result = writer.write(move |conn| {
                    insert(conn, k, 1)?;
                    if k % 2 == 1 {
                        return Err(StoreError::Fenced);
                    }
                    insert(conn, k, 2)?;
                    Ok(k)
                });
                // `write` queues on its first poll, before it waits.
                let mut result = Box::pin(result);
                let early = futures_poll_once(result.as_mut()).await;
                drop(is_queued);
                match early {
                    Some(done) => done,
                    None => result.await,
                }
            }));
        }
        for signal in sent {
            let _ = signal.await;
        }
        queued.wait();
        first.await.unwrap().unwrap();
        for (k, job) in (0..jobs).zip(waiting) {
            let result = job.await.unwrap();
            if k % 2 == 1 {
                assert_eq!(result, Err(StoreError::Fenced), "job {k}");
            } else {
                assert_eq!(result, Ok(k), "job {k}");
            }
        }
        let mut expected = vec![(-1, 0)];
        for k in (0..jobs).filter(|k| k % 2 == 0) {
            expected.push((k, 1));
            expected.push((k, 2));
        }
        assert_eq!(rows(&path), expected);
    }

    /// Polls `future` once: its result if it is already done.
    async fn futures_poll_once<F: Future + Unpin>(future: F) -> Option<F::Output> {
        let mut future = future;
        std::future::poll_fn(move |cx| {
            std::task::Poll::Ready(match std::pin::Pin::new(&mut future).poll(cx) {
                std::task::Poll::Ready(output) => Some(output),
                std::task::Poll::Pending => None,
            })
        })
        .await
    }

    #[tokio::test]
    async fn a_result_is_given_only_after_its_batch_committed() {
        let (writer, path) = writer_on_a_new_file("visible");
        for k in 0..20 {
            writer.write(move |conn| insert(conn, k, 0)).await.unwrap();
            // Another connection sees the row as soon as the write returned.
            assert_eq!(rows(&path).len(), usize::try_from(k + 1).unwrap());
        }
    }
}
