use std::time::Duration;

use ringkv_proto::ProtoError;
use thiserror::Error;

/// Everything a [`crate::Client`] call can fail with.
#[derive(Debug, Error)]
pub enum ClientError {
    /// Connecting to the server (or a socket option) failed.
    #[error("cannot talk to the ringkv server: {0} (is it running, and is the address right?)")]
    Io(#[from] std::io::Error),

    /// No answer within the configured time. For a request, the connection stays open and a
    /// late reply is discarded.
    #[error(
        "{during} timed out after {after:?} (the server is slow or unreachable; \
         raise ClientConfig::{knob} if this is expected)",
        knob = timeout_knob(.during)
    )]
    Timeout {
        /// `"connect"`, `"handshake"` or `"request"`.
        during: &'static str,
        after: Duration,
    },

    /// The connection broke while the request was in flight: it may or may not have been
    /// applied. The next request opens a new connection.
    #[error("connection to the server was lost: {0} (the next request reconnects)")]
    ConnectionLost(String),

    /// [`crate::Client::close`] was called; this client makes no more requests.
    #[error("the client was closed with Client::close(); create a new Client to reconnect")]
    Closed,

    /// The server answered with an error reply, e.g. `ERR syntax error` or
    /// `WRONGTYPE ...`. The connection stays usable.
    #[error("{0}")]
    Server(String),

    /// The server sent bytes that are not a valid reply frame (or a request could not be
    /// encoded). The connection is dropped.
    #[error("protocol error: {0}")]
    Protocol(#[from] ProtoError),

    /// The server refused the HELLO handshake (wrong password, unsupported protocol version) or
    /// is not a ringkv server.
    #[error("handshake with the server failed: {0}")]
    Handshake(String),

    /// TLS could not be set up: a certificate or key file is unusable, or the handshake
    /// failed (wrong CA, no client certificate where one is required, no TLS on the server).
    #[error("{0}")]
    Tls(String),

    /// More requests are waiting for replies than `ClientConfig::max_in_flight` allows.
    #[error(
        "too many requests in flight (limit {max}); wait for some replies or raise \
         ClientConfig::max_in_flight"
    )]
    TooManyInFlight { max: usize },

    /// The server answered with a reply of a type this call does not expect (for example an
    /// array to `INCR`). Usually a client/server version mismatch.
    #[error("unexpected reply to {command}: {got} (is the server a compatible ringkv version?)")]
    UnexpectedReply { command: &'static str, got: String },
}

impl ClientError {
    /// True for errors about the connection itself (could not connect, connection lost,
    /// handshake refused, timeouts, closed client), as opposed to an error reply from the
    /// server or a reply of the wrong type.
    pub fn is_connection_error(&self) -> bool {
        matches!(
            self,
            ClientError::Io(_)
                | ClientError::Timeout { .. }
                | ClientError::ConnectionLost(_)
                | ClientError::Closed
                | ClientError::Handshake(_)
                | ClientError::Tls(_)
        )
    }

    /// The error prefix of a server error reply (`"ERR"`, `"WRONGTYPE"`, `"NOAUTH"`, ...).
    pub fn server_prefix(&self) -> Option<&str> {
        match self {
            ClientError::Server(msg) => msg.split(' ').next(),
            _ => None,
        }
    }
}

fn timeout_knob(during: &str) -> &'static str {
    if during == "request" {
        "request_timeout"
    } else {
        "connect_timeout"
    }
}

/// Result alias of this crate.
pub type Result<T, E = ClientError> = std::result::Result<T, E>;
