//! The cluster layer's sockets and timers, in one place: everything peer links and the
//! coordinator use of the network and of time comes through here. The sockets are
//! `crate::sockets`' (tokio's; the turmoil crate's simulated network under feature `sim`);
//! the timers are tokio's, which inside a turmoil host run on the simulation's paused clock.
//! Wall-clock time (versions, hints) comes from `crate::util::now_ms`, the one wall clock of
//! the crate (simulated time under `sim`).

pub use crate::sockets::TcpStream;
pub use tokio::time::{interval, sleep, timeout, Instant, MissedTickBehavior};

/// Runs blocking file work (hint logs, progress files, the alive stamp) off the event loop,
/// on tokio's blocking pool. Under `sim` it runs inline instead: a pool thread would finish
/// in real time, outside the simulated clock, and make runs unrepeatable.
pub async fn blocking<R: Send + 'static>(
    f: impl FnOnce() -> R + Send + 'static,
) -> std::io::Result<R> {
    #[cfg(not(feature = "sim"))]
    return tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| std::io::Error::other(e.to_string()));
    #[cfg(feature = "sim")]
    Ok(f())
}
