//! One shutdown for every task of a gateway.
//!
//! A gateway's `run` spawns its tasks (the intake, the accept loop or the
//! connection, a peer's writer) on a [`Tasks`]: they all watch one
//! [`CancellationToken`], and `run` returns once all of them have ended
//! ([`Tasks::wait`]). The token is cancelled from outside (SIGINT or SIGTERM
//! in the executables), or from inside when a task fails: the first error
//! ends the gateway and is what `run` returns.

use std::future::Future;
use std::sync::{Arc, Mutex};

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::error::Error;
use crate::sync::lock;

/// The tasks of one gateway, their shared token and the first failure.
#[derive(Debug)]
pub struct Tasks<E> {
    token: CancellationToken,
    tracker: TaskTracker,
    failure: Arc<Mutex<Option<E>>>,
}

impl<E: From<Error> + Send + 'static> Tasks<E> {
    /// Tasks that end when `token` is cancelled (or one of them fails, which
    /// cancels a child of it, not `token` itself).
    pub fn new(token: &CancellationToken) -> Tasks<E> {
        Tasks {
            token: token.child_token(),
            tracker: TaskTracker::new(),
            failure: Arc::new(Mutex::new(None)),
        }
    }

    /// The token every task watches.
    pub fn token(&self) -> &CancellationToken {
        &self.token
    }

    /// Runs `task` until it ends; an error (or a panic, reported as
    /// [`Error::TaskFailed`] named `name`) stops every task of the gateway.
    pub fn spawn<F>(&self, name: &'static str, task: F)
    where
        F: Future<Output = Result<(), E>> + Send + 'static,
    {
        let token = self.token.clone();
        let failure = self.failure.clone();
        let inner = tokio::spawn(task);
        self.tracker.spawn(async move {
            let error = match inner.await {
                Ok(Ok(())) => return,
                Ok(Err(error)) => error,
                Err(join) => {
                    tracing::error!("the {name} task failed: {join}");
                    E::from(Error::TaskFailed(name))
                }
            };
            lock(&failure).get_or_insert(error);
            token.cancel();
        });
    }

    /// Runs a task whose end concerns nobody else (one peer's session):
    /// tracked, so [`Tasks::wait`] waits for it, but its panic is only
    /// logged.
    pub fn spawn_detached<F>(&self, task: F)
    where
        F: Future<Output = ()> + Send + 'static,
    {
        let inner = tokio::spawn(task);
        self.tracker.spawn(async move {
            if let Err(join) = inner.await {
                tracing::error!("a session task failed: {join}");
            }
        });
    }

    /// Waits until every task has ended; the first failure, if any.
    pub async fn wait(self) -> Result<(), E> {
        self.tracker.close();
        self.tracker.wait().await;
        match lock(&self.failure).take() {
            Some(error) => Err(error),
            None => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    /// Tasks under `outer` with one task that waits for the token.
    fn waiting(outer: &CancellationToken) -> Tasks<Error> {
        let tasks = Tasks::new(outer);
        let token = tasks.token().clone();
        tasks.spawn("waiter", async move {
            token.cancelled().await;
            Ok(())
        });
        tasks
    }

    #[tokio::test]
    async fn one_failure_stops_all_and_is_returned() {
        let outer = CancellationToken::new();
        let tasks = waiting(&outer);
        tasks.spawn("failing", async { Err(Error::BusClosed) });
        let ended = tokio::time::timeout(Duration::from_secs(5), tasks.wait())
            .await
            .expect("every task ends");
        assert!(matches!(ended, Err(Error::BusClosed)));
        assert!(!outer.is_cancelled(), "only the gateway's own token");
    }

    #[tokio::test]
    async fn cancelling_ends_them_cleanly_and_a_panic_is_an_error() {
        let outer = CancellationToken::new();
        let tasks = waiting(&outer);
        outer.cancel();
        assert!(tasks.wait().await.is_ok());

        let tasks: Tasks<Error> = Tasks::new(&CancellationToken::new());
        tasks.spawn("panicking", async { panic!("a bug") });
        assert!(matches!(
            tasks.wait().await,
            Err(Error::TaskFailed("panicking"))
        ));
    }
}
