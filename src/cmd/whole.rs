//! The commands over the whole key space, as one type: what a cluster runs across partitions
//! (cluster::keyspace) instead of shard by shard.

use super::keys::Scan;
use super::Command;

/// A key space command (its route is `Route::All`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Whole<'c, 'a> {
    Keys(&'a [u8]),
    Scan(&'c Scan<'a>),
    RandomKey,
    DbSize,
    /// FLUSHDB and FLUSHALL (one database).
    Flush,
}

impl<'a> Command<'a> {
    /// This command as a key space command, or None for any other.
    pub fn whole(&self) -> Option<Whole<'_, 'a>> {
        match self {
            Command::Keys(p) => Some(Whole::Keys(p)),
            Command::Scan(s) => Some(Whole::Scan(s)),
            Command::RandomKey => Some(Whole::RandomKey),
            Command::DbSize => Some(Whole::DbSize),
            Command::Flush => Some(Whole::Flush),
            string_commands!() | key_commands!() | connection_commands!() | server_commands!() => {
                None
            }
        }
    }
}
