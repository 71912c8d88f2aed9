//! A connection's own deadlines (idle, a request arriving too slowly) and the timed write of
//! its replies.

use std::time::Duration;

use tokio::io::{AsyncWrite, AsyncWriteExt};

/// Why the connection's timer closed it.
#[derive(Debug, thiserror::Error)]
pub(super) enum Expired {
    #[error("idle for {0} s (--timeout)")]
    Idle(u64),
    #[error("a request took more than {0} ms to arrive (--request-read-timeout-ms)")]
    SlowRequest(u64),
}

/// The connection's deadlines: idle (--timeout) and a request that arrives too slowly
/// (--request-read-timeout-ms). The timer is armed lazily and re-armed only when it fires
/// early, so serving a request costs no timer operation, only a clock read.
pub(super) struct Deadlines {
    idle: Option<Duration>,
    request: Option<Duration>,
    /// Last time bytes were read or written.
    pub(super) last_io: tokio::time::Instant,
    /// When the incomplete request at the front of the buffer started arriving.
    partial_since: Option<tokio::time::Instant>,
    pub(super) armed: bool,
    /// Writing replies: the request deadline is paused (the connection isn't reading).
    writing: bool,
    /// Not reading (--max-inflight requests pending): the request deadline is paused too.
    paused: bool,
}

impl Deadlines {
    pub(super) fn new(node: &crate::node::Node) -> Deadlines {
        let c = &node.config;
        Deadlines {
            idle: (c.timeout_secs > 0).then(|| Duration::from_secs(c.timeout_secs)),
            request: (c.request_read_timeout_ms > 0)
                .then(|| Duration::from_millis(c.request_read_timeout_ms)),
            last_io: tokio::time::Instant::now(),
            partial_since: None,
            armed: false,
            writing: false,
            paused: false,
        }
    }

    /// The earliest deadline now in force.
    pub(super) fn next(&self) -> Option<tokio::time::Instant> {
        let idle = self.idle.map(|d| self.last_io + d);
        let req = self
            .request
            .zip(self.partial_since)
            .filter(|_| !self.writing && !self.paused)
            .map(|(d, t)| t + d);
        match (idle, req) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Arms `timer` if a deadline is in force and it isn't armed yet.
    pub(super) fn arm(&mut self, timer: std::pin::Pin<&mut tokio::time::Sleep>) {
        if !self.armed {
            if let Some(at) = self.next() {
                timer.reset(at);
                self.armed = true;
            }
        }
    }

    /// The timer fired: an error if a deadline really passed, else re-armed for the next.
    pub(super) fn fired(
        &mut self,
        timer: std::pin::Pin<&mut tokio::time::Sleep>,
    ) -> Result<(), Expired> {
        self.armed = false;
        let now = tokio::time::Instant::now();
        if let Some(d) = self.idle.filter(|d| now >= self.last_io + *d) {
            return Err(Expired::Idle(d.as_secs()));
        }
        if let Some(d) = self.request.filter(|_| !self.writing && !self.paused) {
            if self.partial_since.is_some_and(|t| now >= t + d) {
                return Err(Expired::SlowRequest(d.as_millis() as u64));
            }
        }
        self.arm(timer);
        Ok(())
    }

    /// Stops or resumes reading (--max-inflight): the clock of a request arriving slowly is
    /// paused meanwhile and restarts on resuming, as after writing replies.
    pub(super) fn pause(&mut self, paused: bool) {
        if self.paused && !paused && self.partial_since.is_some() {
            self.partial_since = Some(tokio::time::Instant::now());
        }
        self.paused = paused;
    }

    /// After parsing: `used` bytes were consumed and `left` remain (an incomplete request).
    pub(super) fn parsed(&mut self, used: usize, left: usize) {
        if left == 0 {
            self.partial_since = None;
        } else if used > 0 || self.partial_since.is_none() {
            // A request completed (or this is the first byte of one): the clock starts for
            // the next.
            self.partial_since = Some(tokio::time::Instant::now());
        }
    }
}

pub(super) fn expired(e: Expired) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::TimedOut, e)
}

/// Writes all of `buf`, counting each write's progress as activity for --timeout, so a
/// client that never reads its replies is closed once idle that long.
pub(super) async fn write_out<S: AsyncWrite + Unpin>(
    stream: &mut S,
    mut buf: &[u8],
    dl: &mut Deadlines,
    mut timer: std::pin::Pin<&mut tokio::time::Sleep>,
) -> std::io::Result<()> {
    dl.writing = true;
    let r = write_all_timed(stream, &mut buf, dl, timer.as_mut()).await;
    dl.writing = false;
    if dl.partial_since.is_some() {
        // The request clock restarts: the connection read nothing while it wrote. (A timer
        // armed for the earlier deadline fires early and re-arms for this one.)
        dl.partial_since = Some(tokio::time::Instant::now());
    }
    r
}

async fn write_all_timed<S: AsyncWrite + Unpin>(
    stream: &mut S,
    buf: &mut &[u8],
    dl: &mut Deadlines,
    mut timer: std::pin::Pin<&mut tokio::time::Sleep>,
) -> std::io::Result<()> {
    while !buf.is_empty() {
        dl.arm(timer.as_mut());
        let n = tokio::select! {
            biased;
            r = stream.write(buf) => r?,
            _ = &mut timer, if dl.armed => {
                dl.fired(timer.as_mut()).map_err(expired)?;
                continue;
            }
        };
        if n == 0 {
            return Err(std::io::ErrorKind::WriteZero.into());
        }
        *buf = &buf[n..];
        dl.last_io = tokio::time::Instant::now();
    }
    // TLS may hold back the last record until flushed; a no-op for TCP.
    stream.flush().await
}
