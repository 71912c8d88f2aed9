//! The TCP types every layer uses (client connections in `net`, TLS, peer links in `cluster`),
//! in one place: tokio's, or under feature `sim` the turmoil crate's simulated network (same
//! shape), so that whole nodes run as hosts of a deterministic simulation (`sim/` at the repo
//! root). A leaf: imports nothing from the crate.
//!
//! The few operations whose signatures differ between the two are functions here, so the
//! callers have no `cfg`.

use std::io;

#[cfg(not(feature = "sim"))]
pub use tokio::net::{TcpListener, TcpStream};
#[cfg(feature = "sim")]
pub use turmoil::net::{TcpListener, TcpStream};

/// A connection on its way from the loop that accepted it to another (`--accept handoff`):
/// a plain std socket, re-registered by the receiving loop's runtime. The simulation runs one
/// loop per node, so it never hands off; its type is the simulated stream itself.
#[cfg(not(feature = "sim"))]
pub type Handoff = std::net::TcpStream;
#[cfg(feature = "sim")]
pub type Handoff = TcpStream;

/// Detaches an accepted connection from this loop's runtime for another loop.
pub fn handoff(s: TcpStream) -> io::Result<Handoff> {
    #[cfg(not(feature = "sim"))]
    return s.into_std();
    #[cfg(feature = "sim")]
    Ok(s)
}

/// Registers a handed-off connection with this loop's runtime.
pub fn adopt(s: Handoff) -> io::Result<TcpStream> {
    #[cfg(not(feature = "sim"))]
    return TcpStream::from_std(s);
    #[cfg(feature = "sim")]
    Ok(s)
}

/// Registers a listener bound with socket options (SO_REUSEPORT) with this loop's runtime. A
/// simulated node binds its listener with [`TcpListener::bind`] instead.
pub fn listener_from_std(l: std::net::TcpListener) -> io::Result<TcpListener> {
    #[cfg(not(feature = "sim"))]
    return TcpListener::from_std(l);
    #[cfg(feature = "sim")]
    {
        drop(l);
        Err(io::Error::new(
            io::ErrorKind::Unsupported,
            "a simulated node has no OS listener; it binds a simulated one",
        ))
    }
}

/// Reads without consuming (tokio peeks through `&self`, turmoil through `&mut self`).
pub async fn peek(s: &mut TcpStream, buf: &mut [u8]) -> io::Result<usize> {
    s.peek(buf).await
}

/// The two halves of a stream, borrowed, to read and write at once.
#[cfg(not(feature = "sim"))]
pub fn split(
    s: &mut TcpStream,
) -> (
    tokio::net::tcp::ReadHalf<'_>,
    tokio::net::tcp::WriteHalf<'_>,
) {
    s.split()
}

/// The two halves of a stream, borrowed, to read and write at once (turmoil's stream has
/// only owned halves; tokio's generic split locks between them, which costs nothing here).
#[cfg(feature = "sim")]
pub fn split(
    s: &mut TcpStream,
) -> (
    tokio::io::ReadHalf<&mut TcpStream>,
    tokio::io::WriteHalf<&mut TcpStream>,
) {
    tokio::io::split(s)
}
