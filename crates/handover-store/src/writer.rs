//! SQLite's one writer, with group commit.
//!
//! SQLite lets one connection write at a time. When several pooled connections try, the
//! losers wait in SQLite's busy handler, which sleeps in steps of up to 100 ms, and each
//! winner pays its own `fsync`. Under load that was the bridge's largest cost (see
//! `docs/benchmarks.md`). So every write goes to one task that owns the one writing
//! connection. It takes the jobs queued at that moment (up to [`BATCH`]), runs each in its own
//! savepoint inside one transaction, and commits them together: one `fsync` for the batch.
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
//! Reads do not come here. WAL mode lets the pool's other connections read beside the writer,
//! and they see every committed batch.

use std::future::Future;
use std::pin::Pin;

use handover_core::ports::StoreError;
use sqlx::{AnyConnection, AnyPool, Connection};
use tokio::sync::{mpsc, oneshot};

/// The most jobs one transaction takes. A batch holds the writer for the time its jobs run,
/// so the bound keeps a burst from delaying the first job's result without end.
pub(crate) const BATCH: usize = 256;

/// The most jobs that may wait for the writer. A caller past it waits for room: back
/// pressure, not an error.
const QUEUE: usize = 4096;

/// A future that borrows the connection it runs on.
pub(crate) type ConnFuture<'c, T> = Pin<Box<dyn Future<Output = T> + Send + 'c>>;

/// One unit of work for the writer: statements on a connection inside a transaction. An
/// `Err` means the job's statements are rolled back.
pub(crate) trait WriteFn<T>:
    for<'c> FnOnce(&'c mut AnyConnection) -> ConnFuture<'c, Result<T, StoreError>> + Send + 'static
{
}

impl<T, F> WriteFn<T> for F where
    F: for<'c> FnOnce(&'c mut AnyConnection) -> ConnFuture<'c, Result<T, StoreError>>
        + Send
        + 'static
{
}

/// A job whose result waits for the batch's commit.
trait Settle: Send {
    fn succeeded(&self) -> bool;
    /// Hands the result out; `committed` is how the batch's transaction ended.
    fn settle(self: Box<Self>, committed: Result<(), StoreError>);
}

/// A queued job, its result type erased.
trait Job: Send {
    fn run<'c>(self: Box<Self>, conn: &'c mut AnyConnection) -> ConnFuture<'c, Box<dyn Settle>>;
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

impl<T: Send + 'static, F: WriteFn<T>> Job for Queued<T, F> {
    fn run<'c>(self: Box<Self>, conn: &'c mut AnyConnection) -> ConnFuture<'c, Box<dyn Settle>> {
        let Queued { work, reply } = *self;
        Box::pin(async move {
            let result = work(conn).await;
            Box::new(Ran { result, reply }) as Box<dyn Settle>
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

/// The handle callers write through. Cloning shares the one writer.
#[derive(Clone, Debug)]
pub(crate) struct Writer {
    jobs: mpsc::Sender<Box<dyn Job>>,
}

impl Writer {
    /// Starts the writer task on `pool`, which should hold one connection: the writer keeps
    /// it between batches and takes a fresh one after a failure.
    pub(crate) fn start(pool: AnyPool) -> Self {
        let (jobs, queue) = mpsc::channel(QUEUE);
        tokio::spawn(run(pool, queue));
        Self { jobs }
    }

    /// Runs `work` in the next batch and returns its result once the batch has committed.
    pub(crate) async fn write<T: Send + 'static>(
        &self,
        work: impl WriteFn<T>,
    ) -> Result<T, StoreError> {
        let (reply, result) = oneshot::channel();
        self.jobs
            .send(Box::new(Queued { work, reply }))
            .await
            .map_err(|_| stopped())?;
        result.await.map_err(|_| stopped())?
    }
}

fn stopped() -> StoreError {
    StoreError::Unavailable("the SQLite writer has stopped".to_owned())
}

fn unavailable(what: &str, error: &sqlx::Error) -> StoreError {
    StoreError::Unavailable(format!("SQLite {what}: {error}"))
}

async fn run(pool: AnyPool, mut queue: mpsc::Receiver<Box<dyn Job>>) {
    let mut batch: Vec<Box<dyn Job>> = Vec::with_capacity(BATCH);
    let mut conn = None;
    while queue.recv_many(&mut batch, BATCH).await > 0 {
        if conn.is_none() {
            match pool.acquire().await {
                Ok(acquired) => conn = Some(acquired),
                Err(error) => {
                    let error = unavailable("connection", &error);
                    for job in batch.drain(..) {
                        job.abandon(error.clone());
                    }
                    continue;
                }
            }
        }
        let Some(held) = conn.as_mut() else {
            continue;
        };
        if let Err(error) = commit_batch(held, &mut batch).await {
            tracing::warn!(%error, "a SQLite write batch failed; reconnecting");
            // The connection may be in any state now; the pool gives a fresh one.
            if let Some(held) = conn.take() {
                held.detach();
            }
        }
    }
}

/// Runs and commits `batch` (emptying it); every job gets its result.
async fn commit_batch(
    conn: &mut AnyConnection,
    batch: &mut Vec<Box<dyn Job>>,
) -> Result<(), StoreError> {
    let mut tx = match conn.begin().await {
        Ok(tx) => tx,
        Err(error) => {
            let error = unavailable("begin", &error);
            for job in batch.drain(..) {
                job.abandon(error.clone());
            }
            return Err(error);
        }
    };
    let mut ran: Vec<Box<dyn Settle>> = Vec::with_capacity(batch.len());
    let mut failure = None;
    let mut jobs = batch.drain(..);
    for job in jobs.by_ref() {
        let mut savepoint = match tx.begin().await {
            Ok(savepoint) => savepoint,
            Err(error) => {
                failure = Some(unavailable("savepoint", &error));
                job.abandon(failure.clone().unwrap_or_else(stopped));
                break;
            }
        };
        let done = job.run(&mut savepoint).await;
        let ended = if done.succeeded() {
            savepoint.commit().await
        } else {
            savepoint.rollback().await
        };
        ran.push(done);
        if let Err(error) = ended {
            failure = Some(unavailable("savepoint", &error));
            break;
        }
    }
    let committed = match failure {
        Some(error) => {
            for job in jobs {
                job.abandon(error.clone());
            }
            // Dropping the transaction rolls it back.
            drop(tx);
            Err(error)
        }
        None => tx.commit().await.map_err(|error| unavailable("commit", &error)),
    };
    for done in ran {
        done.settle(committed.clone());
    }
    committed
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use sqlx::Row;
    use sqlx::any::AnyPoolOptions;
    use tokio::sync::Notify;

    use super::*;

    async fn writer_on_a_new_file(name: &str) -> (Writer, AnyPool) {
        sqlx::any::install_default_drivers();
        let path = std::env::temp_dir().join(format!(
            "handover-writer-{name}-{}.db",
            std::process::id()
        ));
        for suffix in ["", "-wal", "-shm"] {
            let _ = std::fs::remove_file(format!("{}{suffix}", path.display()));
        }
        let url = format!("sqlite://{}?mode=rwc", path.display());
        let reads = AnyPoolOptions::new().connect(&url).await.unwrap();
        sqlx::query("PRAGMA journal_mode = WAL")
            .execute(&reads)
            .await
            .unwrap();
        sqlx::query("CREATE TABLE rows (k INTEGER NOT NULL, part INTEGER NOT NULL)")
            .execute(&reads)
            .await
            .unwrap();
        let writing = AnyPoolOptions::new()
            .max_connections(1)
            .connect(&url)
            .await
            .unwrap();
        (Writer::start(writing), reads)
    }

    async fn insert(conn: &mut AnyConnection, k: i64, part: i64) -> Result<(), StoreError> {
        sqlx::query("INSERT INTO rows (k, part) VALUES ($1, $2)")
            .bind(k)
            .bind(part)
            .execute(&mut *conn)
            .await
            .map(|_| ())
            .map_err(|error| unavailable("test insert", &error))
    }

    /// Queues `jobs` behind a job that holds the writer until they are all queued, so that
    /// they run as one batch: each writes two rows, and every odd one fails after its first.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_failed_job_in_a_batch_is_rolled_back_alone_and_the_others_commit() {
        let (writer, reads) = writer_on_a_new_file("batch").await;
        let hold = Arc::new(Notify::new());
        let held = hold.clone();
        let (started, running) = oneshot::channel();
        let first = tokio::spawn({
            let writer = writer.clone();
            async move {
                writer
                    .write(move |conn| {
                        Box::pin(async move {
                            let _ = started.send(());
                            held.notified().await;
                            insert(conn, -1, 0).await
                        })
                    })
                    .await
            }
        });
        // The first job is running, alone in its batch, before the others queue.
        running.await.unwrap();
        let jobs = 100_i64;
        let mut waiting = Vec::new();
        for k in 0..jobs {
            let writer = writer.clone();
            waiting.push(tokio::spawn(async move {
                writer
                    .write(move |conn| {
                        Box::pin(async move {
                            insert(conn, k, 1).await?;
                            if k % 2 == 1 {
                                return Err(StoreError::Fenced);
                            }
                            insert(conn, k, 2).await?;
                            Ok(k)
                        })
                    })
                    .await
            }));
        }
        // Every job is queued (the channel is far larger than the jobs) before the first ends.
        // The bound makes a broken writer fail the test instead of hanging it.
        let mut spins = 0_u32;
        while writer.jobs.capacity() > QUEUE - usize::try_from(jobs).unwrap() {
            spins += 1;
            assert!(spins < 10_000_000, "the jobs never all queued");
            tokio::task::yield_now().await;
        }
        hold.notify_one();
        first.await.unwrap().unwrap();
        for (k, job) in (0..jobs).zip(waiting) {
            let result = job.await.unwrap();
            if k % 2 == 1 {
                assert_eq!(result, Err(StoreError::Fenced), "job {k}");
            } else {
                assert_eq!(result, Ok(k), "job {k}");
            }
        }
        let rows = sqlx::query("SELECT k, part FROM rows ORDER BY k, part")
            .fetch_all(&reads)
            .await
            .unwrap();
        let rows: Vec<(i64, i64)> = rows
            .iter()
            .map(|row| (row.get::<i64, _>("k"), row.get::<i64, _>("part")))
            .collect();
        let mut expected = vec![(-1, 0)];
        for k in (0..jobs).filter(|k| k % 2 == 0) {
            expected.push((k, 1));
            expected.push((k, 2));
        }
        assert_eq!(rows, expected);
    }

    #[tokio::test]
    async fn a_result_is_given_only_after_its_batch_committed() {
        let (writer, reads) = writer_on_a_new_file("visible").await;
        for k in 0..20 {
            writer
                .write(move |conn| Box::pin(insert(conn, k, 0)))
                .await
                .unwrap();
            // Another connection sees the row as soon as the write returned.
            let count: i64 = sqlx::query("SELECT COUNT(*) AS n FROM rows")
                .fetch_one(&reads)
                .await
                .unwrap()
                .get("n");
            assert_eq!(count, k + 1);
        }
    }
}
