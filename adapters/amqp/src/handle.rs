//! A relay or worker running on a task of its own, with its counters and a way to end it.

use std::future::Future;
use std::sync::Arc;

use tokio::sync::watch;
use tokio::task::JoinHandle;

pub struct Handle<S> {
    pub stats: Arc<S>,
    stop: watch::Sender<bool>,
    task: JoinHandle<()>,
}

impl<S> Handle<S> {
    /// Spawns `run(stopped)`, which must end once `stopped` turns true.
    pub(crate) fn spawn<F, Fut>(stats: Arc<S>, run: F) -> Handle<S>
    where
        F: FnOnce(watch::Receiver<bool>) -> Fut,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let (stop, stopped) = watch::channel(false);
        let task = tokio::spawn(run(stopped));
        Handle { stats, stop, task }
    }

    /// Asks it to stop (what is in hand is finished) and waits until it has.
    pub async fn stop(self) {
        let _ = self.stop.send(true);
        let _ = self.task.await;
    }

    /// Ends it at once, as a crash would: nothing is finished, nothing released.
    pub async fn kill(self) {
        self.task.abort();
        let _ = self.task.await;
    }
}
