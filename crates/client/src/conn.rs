//! One multiplexed connection: a writer task that batches outgoing frames, a reader task that
//! matches replies to waiting requests by id, and the table of pending requests between them.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use ringkv_proto::frame::{decode_frame, FrameHeader};
use ringkv_proto::{ProtoError, Request, Status, Value, HEADER_LEN};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::{ClientError, Result, ServerInfo};

/// The writer stops gathering queued frames into one write once it holds this many bytes.
const MAX_BATCH_BYTES: usize = 256 * 1024;
/// Read buffer growth step.
const READ_CHUNK: usize = 64 * 1024;

type Reply = Result<Value>;

/// A failed call, and whether its request was handed to the connection's writer (if so the
/// server may have applied it).
#[derive(Debug)]
pub(crate) struct CallFailure {
    pub(crate) error: ClientError,
    pub(crate) sent: bool,
}

/// State shared by the connection handle, its reader and its writer.
struct Shared {
    state: Mutex<State>,
    /// Mirrors `state.closed.is_some()` for a lock-free check on the request path.
    closed: AtomicBool,
    /// Set to true once, when the connection is closed, to stop both tasks.
    stop: watch::Sender<bool>,
}

#[derive(Default)]
struct State {
    pending: HashMap<u64, oneshot::Sender<Reply>>,
    /// Why the connection closed, once it has.
    closed: Option<String>,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        // A poisoned lock only means another thread panicked while holding it; the map is
        // still consistent (every operation on it is a single insert/remove).
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Marks the connection closed, fails every pending request with `ConnectionLost`, and
    /// stops both tasks. Only the first call has an effect.
    fn fail(&self, reason: String) {
        let drained: Vec<_> = {
            let mut st = self.lock();
            if st.closed.is_some() {
                return;
            }
            st.closed = Some(reason.clone());
            self.closed.store(true, Ordering::Release);
            st.pending.drain().map(|(_, tx)| tx).collect()
        };
        tracing::debug!(%reason, pending = drained.len(), "ringkv connection closed");
        for tx in drained {
            let _ = tx.send(Err(ClientError::ConnectionLost(reason.clone())));
        }
        self.stop.send_replace(true);
    }

    fn complete(&self, id: u64, reply: Reply) {
        let tx = self.lock().pending.remove(&id);
        match tx {
            // The receiver may be gone (the caller was cancelled): nothing to do.
            Some(tx) => drop(tx.send(reply)),
            None => tracing::debug!(id, "reply for a request nobody waits for (timed out?)"),
        }
    }

    /// Handles one reply frame. An `Err` closes the connection with that reason (a fatal
    /// reply closes it here).
    fn dispatch(&self, header: FrameHeader, payload: Bytes) -> std::result::Result<(), String> {
        if !header.is_reply() {
            return Err("the server sent a frame without the reply flag".into());
        }
        let status = Status::from_u8(header.status)
            .ok_or_else(|| format!("the server sent unknown reply status {}", header.status))?;
        let value = Value::decode(&payload)
            .map_err(|e| format!("the server sent an undecodable reply: {e}"))?;
        match status {
            Status::Ok => {
                self.complete(header.request_id, Ok(value));
                Ok(())
            }
            Status::Error => {
                self.complete(
                    header.request_id,
                    Err(ClientError::Server(error_text(&value))),
                );
                Ok(())
            }
            Status::Fatal => {
                // Close first, so that a caller reacting to this error already finds the
                // connection closed and reconnects, then answer the request itself.
                let msg = error_text(&value);
                let tx = self.lock().pending.remove(&header.request_id);
                self.fail(format!("the server closed the connection after: {msg}"));
                if let Some(tx) = tx {
                    let _ = tx.send(Err(ClientError::Server(msg)));
                }
                Ok(())
            }
        }
    }
}

/// The text of an error reply (anything else is shown as a debug dump).
pub(crate) fn error_text(v: &Value) -> String {
    match v {
        Value::Error(b) | Value::Simple(b) | Value::Bulk(b) => String::from_utf8_lossy(b).into(),
        other => format!("{other:?}"),
    }
}

/// A deadline `d` from now that never overflows (`Duration::MAX` means "never").
pub(crate) fn deadline_after(d: Duration) -> Instant {
    let now = Instant::now();
    now.checked_add(d)
        .or_else(|| now.checked_add(Duration::from_secs(30 * 365 * 24 * 3600)))
        .unwrap_or(now)
}

/// Removes a pending entry if its request is abandoned (timeout, cancelled future, send
/// failure), so the table never grows with requests nobody waits for.
struct PendingGuard<'a> {
    shared: &'a Shared,
    id: u64,
    armed: bool,
}

impl Drop for PendingGuard<'_> {
    fn drop(&mut self) {
        if self.armed {
            self.shared.lock().pending.remove(&self.id);
        }
    }
}

/// A handle to one open connection. Dropping the last handle stops its tasks.
pub(crate) struct Connection {
    shared: Arc<Shared>,
    tx: mpsc::UnboundedSender<Bytes>,
    next_id: AtomicU64,
    info: OnceLock<ServerInfo>,
    reader: JoinHandle<()>,
    writer: JoinHandle<()>,
}

impl Drop for Connection {
    fn drop(&mut self) {
        // Nobody can be waiting for a reply any more (waiters hold a handle), so nothing is
        // lost by stopping the tasks now; this also closes the socket.
        self.reader.abort();
        self.writer.abort();
    }
}

impl Connection {
    /// Opens a TCP connection and performs the HELLO handshake, all within `connect_timeout`.
    pub(crate) async fn open(
        addrs: &[std::net::SocketAddr],
        config: &crate::ClientConfig,
    ) -> Result<Arc<Connection>> {
        let deadline = deadline_after(config.connect_timeout);
        let stream = match tokio::time::timeout_at(deadline, TcpStream::connect(addrs)).await {
            Ok(r) => r?,
            Err(_) => {
                return Err(ClientError::Timeout {
                    during: "connect",
                    after: config.connect_timeout,
                })
            }
        };
        stream.set_nodelay(true)?;
        let max_frame = config.max_frame_bytes;
        let conn = Arc::new(match &config.tls {
            None => {
                let (rd, wr) = stream.into_split();
                Connection::start(rd, wr, max_frame)
            }
            Some(tls) => match tokio::time::timeout_at(deadline, tls.connect(stream)).await {
                Ok(Ok(s)) => {
                    let (rd, wr) = tokio::io::split(s);
                    Connection::start(rd, wr, max_frame)
                }
                Ok(Err(e)) => return Err(e),
                Err(_) => {
                    return Err(ClientError::Timeout {
                        during: "handshake",
                        after: config.connect_timeout,
                    })
                }
            },
        });

        let hello = Request::Hello {
            min_version: 1,
            max_version: 1,
            password: config.password.as_deref().unwrap_or("").as_bytes(),
            client_name: config.client_name.as_deref().unwrap_or("").as_bytes(),
        };
        let reply = match conn.call(&hello, deadline, "handshake").await {
            Ok(v) => v,
            Err(ClientError::Server(msg)) => return Err(handshake_refused(msg)),
            Err(ClientError::Timeout { .. }) => {
                return Err(ClientError::Timeout {
                    during: "handshake",
                    after: config.connect_timeout,
                })
            }
            // TLS 1.3: the server checks the client certificate after the client finished
            // its side of the handshake, so a refusal arrives as an alert on the first read.
            Err(ClientError::ConnectionLost(reason))
                if config.tls.is_some() && reason.contains("alert") =>
            {
                let hint = if reason.contains("CertificateRequired") {
                    "the server requires a client certificate signed by its --tls-ca"
                } else {
                    "the server did not accept this client's certificate"
                };
                return Err(ClientError::Tls(format!(
                    "the server refused the TLS connection: {reason} ({hint})"
                )));
            }
            Err(ClientError::ConnectionLost(reason)) => {
                return Err(ClientError::Handshake(format!(
                    "the connection closed during HELLO ({reason}); is this a ringkv server?"
                )))
            }
            Err(e) => return Err(e),
        };
        let info = parse_hello_reply(reply)?;
        tracing::debug!(?info, "connected to ringkv");
        let _ = conn.info.set(info);
        Ok(conn)
    }

    fn start<R, W>(rd: R, wr: W, max_frame_bytes: usize) -> Connection
    where
        R: AsyncRead + Unpin + Send + 'static,
        W: AsyncWrite + Unpin + Send + 'static,
    {
        let (stop, stop_rx) = watch::channel(false);
        let shared = Arc::new(Shared {
            state: Mutex::new(State::default()),
            closed: AtomicBool::new(false),
            stop,
        });
        let (tx, rx) = mpsc::unbounded_channel();
        let reader = tokio::spawn(reader_task(
            rd,
            shared.clone(),
            max_frame_bytes,
            stop_rx.clone(),
        ));
        let writer = tokio::spawn(writer_task(wr, rx, shared.clone(), stop_rx));
        Connection {
            shared,
            tx,
            next_id: AtomicU64::new(1),
            info: OnceLock::new(),
            reader,
            writer,
        }
    }

    pub(crate) fn is_closed(&self) -> bool {
        self.shared.closed.load(Ordering::Acquire)
    }

    pub(crate) fn info(&self) -> Option<&ServerInfo> {
        self.info.get()
    }

    /// Closes the connection: pending requests fail with `ConnectionLost(reason)`.
    pub(crate) fn close(&self, reason: &str) {
        self.shared.fail(reason.to_string());
    }

    /// Sends one request and waits for its reply until `deadline`.
    pub(crate) async fn call(
        &self,
        req: &Request<'_>,
        deadline: Instant,
        during: &'static str,
    ) -> Result<Value> {
        self.call_tracked(req, deadline, during)
            .await
            .map_err(|f| f.error)
    }

    /// [`Connection::call`], saying on failure whether the request may have reached the
    /// server (the cluster client retries elsewhere only what surely did not).
    pub(crate) async fn call_tracked(
        &self,
        req: &Request<'_>,
        deadline: Instant,
        during: &'static str,
    ) -> std::result::Result<Value, CallFailure> {
        let unsent = |error| CallFailure { error, sent: false };
        let started = Instant::now();
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let mut buf = BytesMut::new();
        req.encode(id, &mut buf);
        // The length field is a u32: a frame that does not fit would be encoded wrong.
        if buf.len() - 4 > u32::MAX as usize {
            return Err(unsent(ClientError::Protocol(ProtoError::FrameTooLarge {
                len: buf.len() as u64,
                max: u32::MAX as u64 + 4,
            })));
        }

        let (tx, rx) = oneshot::channel();
        {
            let mut st = self.shared.lock();
            if let Some(reason) = &st.closed {
                return Err(unsent(ClientError::ConnectionLost(reason.clone())));
            }
            st.pending.insert(id, tx);
        }
        let mut guard = PendingGuard {
            shared: &self.shared,
            id,
            armed: true,
        };
        if self.tx.send(buf.freeze()).is_err() {
            return Err(unsent(ClientError::ConnectionLost(
                "the connection's writer has stopped".into(),
            )));
        }
        let sent = |error| CallFailure { error, sent: true };
        match tokio::time::timeout_at(deadline, rx).await {
            Ok(Ok(reply)) => {
                guard.armed = false;
                reply.map_err(sent)
            }
            // The sender was dropped without an answer: only happens if the tasks are gone.
            Ok(Err(_)) => Err(sent(ClientError::ConnectionLost(
                "the connection closed before the reply arrived".into(),
            ))),
            Err(_) => Err(sent(ClientError::Timeout {
                during,
                after: started.elapsed(),
            })),
        }
    }
}

fn handshake_refused(msg: String) -> ClientError {
    let hint = if msg.starts_with("WRONGPASS") || msg.starts_with("NOAUTH") {
        " (check the password: ClientConfig::password, or kvsh -a)"
    } else if msg.contains("version") {
        " (this client speaks binary protocol version 1; upgrade the client or the server)"
    } else {
        ""
    };
    ClientError::Handshake(format!("the server refused HELLO: {msg}{hint}"))
}

fn parse_hello_reply(reply: Value) -> Result<ServerInfo> {
    let bad = |v: &Value| {
        ClientError::Handshake(format!(
            "unexpected HELLO reply {v:?}; is this a ringkv server of a compatible version?"
        ))
    };
    let Value::Array(items) = &reply else {
        return Err(bad(&reply));
    };
    match items.as_slice() {
        [Value::Int(version), Value::Bulk(name), Value::Bulk(server_version), Value::Int(node_id)]
            if name.as_ref() == b"ringkv" =>
        {
            if *version != 1 {
                return Err(ClientError::Handshake(format!(
                    "the server chose protocol version {version}, but this client only speaks 1"
                )));
            }
            Ok(ServerInfo {
                protocol_version: 1,
                server_version: String::from_utf8_lossy(server_version).into_owned(),
                node_id: *node_id as u64,
            })
        }
        _ => Err(bad(&reply)),
    }
}

async fn reader_task<R: AsyncRead + Unpin>(
    mut rd: R,
    shared: Arc<Shared>,
    max_frame: usize,
    mut stop: watch::Receiver<bool>,
) {
    let mut buf = BytesMut::with_capacity(READ_CHUNK);
    let reason = 'outer: loop {
        // Hand out every whole frame in the buffer.
        loop {
            match decode_frame(&buf, max_frame) {
                Ok(Some((header, _, consumed))) => {
                    let frame = buf.split_to(consumed).freeze();
                    if let Err(reason) = shared.dispatch(header, frame.slice(HEADER_LEN..)) {
                        break 'outer reason;
                    }
                }
                Ok(None) => break,
                Err(e) => break 'outer format!("bad frame from the server: {e}"),
            }
        }
        // Make room: for a partly received frame, room for all of it (its length was
        // checked against max_frame by decode_frame); otherwise a chunk.
        let want = if buf.len() >= 4 {
            let len = u32::from_be_bytes([buf[0], buf[1], buf[2], buf[3]]) as usize;
            (len + 4).saturating_sub(buf.len()).max(READ_CHUNK)
        } else {
            READ_CHUNK
        };
        buf.reserve(want);
        tokio::select! {
            r = rd.read_buf(&mut buf) => match r {
                Ok(0) if buf.is_empty() => break "the server closed the connection".to_string(),
                Ok(0) => break "the server closed the connection in the middle of a frame".to_string(),
                Ok(_) => {}
                Err(e) => break format!("read failed: {e}"),
            },
            _ = stop.wait_for(|s| *s) => return,
        }
    };
    shared.fail(reason);
}

async fn writer_task<W: AsyncWrite + Unpin>(
    mut wr: W,
    mut rx: mpsc::UnboundedReceiver<Bytes>,
    shared: Arc<Shared>,
    mut stop: watch::Receiver<bool>,
) {
    let mut batch = BytesMut::new();
    loop {
        let first = tokio::select! {
            m = rx.recv() => match m {
                Some(frame) => frame,
                None => break,
            },
            _ = stop.wait_for(|s| *s) => return,
        };
        // Gather whatever else is already queued into the same write.
        let mut single = Some(first);
        while batch.len() + single.as_ref().map_or(0, |f| f.len()) < MAX_BATCH_BYTES {
            match rx.try_recv() {
                Ok(frame) => {
                    if let Some(f) = single.take() {
                        batch.extend_from_slice(&f);
                    }
                    batch.extend_from_slice(&frame);
                }
                Err(_) => break,
            }
        }
        let res = tokio::select! {
            r = async {
                match &single {
                    // Only one frame: write it without copying.
                    Some(f) => wr.write_all(f).await?,
                    None => wr.write_all(&batch).await?,
                }
                // TLS may hold back the last record until flushed; a no-op for TCP.
                wr.flush().await
            } => r,
            _ = stop.wait_for(|s| *s) => return,
        };
        batch.clear();
        if batch.capacity() > 4 * MAX_BATCH_BYTES {
            // Don't keep a huge buffer around after one big value.
            batch = BytesMut::new();
        }
        if let Err(e) = res {
            shared.fail(format!("write failed: {e}"));
            return;
        }
    }
    let _ = wr.shutdown().await;
}
