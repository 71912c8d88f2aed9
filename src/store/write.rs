//! How a write turns a key's stored versions into new ones: which versions it supersedes,
//! how concurrent ones are kept (siblings) or resolved (last-write-wins), and the bound on
//! siblings.

use super::clock::NodeId;
use super::dvv::{Dot, TooManySiblings, VersionVector, MAX_COUNTER};
use super::entry::{resolve_lww, Entry, VersionRef, Versions};

/// What to do with concurrent versions of a key (`--conflicts`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Conflicts {
    /// Keep them as siblings; binary GET returns them all (Riak's typed-bucket default).
    #[default]
    Siblings,
    /// Keep only the newest timestamp (ties: the greater actor); siblings are never stored.
    Lww,
}

/// Riak refuses writes past 100 siblings (and warns at 25). (The server's default comes from
/// `config::DEFAULT_MAX_SIBLINGS`; a test checks they agree.)
pub const DEFAULT_MAX_SIBLINGS: usize = 100;

/// The node's rules for new versions, fixed at start-up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VersionPolicy {
    /// The actor of the dots this node mints (`crate::actor`: not always its node id).
    pub actor: NodeId,
    pub conflicts: Conflicts,
    /// Most siblings a key may hold; a write that would leave more is refused.
    pub max_siblings: usize,
    /// How long a dead key (tombstones, expired values) is kept before it is purged, so that
    /// replicas that missed the delete learn of it instead of resurrecting the value.
    pub tombstone_grace_ms: u64,
    /// Dead keys past their grace are not purged by the shard itself but handed over as
    /// candidates (`Shard::take_purge_candidates`) to whoever must approve each purge: in a
    /// cluster, every replica of the key must hold the tombstone first (docs/cluster.md).
    pub purge_needs_approval: bool,
}

impl Default for VersionPolicy {
    fn default() -> Self {
        VersionPolicy {
            actor: 0,
            conflicts: Conflicts::Siblings,
            max_siblings: DEFAULT_MAX_SIBLINGS,
            tombstone_grace_ms: 0,
            purge_needs_approval: false,
        }
    }
}

/// Most actors a client's causal context may name, unless the key's own context names more:
/// one per dot actor that ever accepted a write of the key (a replica, and a fresh one after
/// a crash that may have lost writes it had sent: `crate::actor`), so a handful; a context
/// naming more than both was not made by ringkv.
pub const MAX_CONTEXT_ACTORS: usize = 64;

/// A write refused before it changed anything.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum WriteError {
    #[error(transparent)]
    TooManySiblings(#[from] TooManySiblings),
    #[error(
        "invalid causal context: it claims write {claimed} of this node, which has made only \
         {made}; pass back a context the server returned"
    )]
    ForgedContext { claimed: u64, made: u64 },
    #[error(
        "invalid causal context: it names {actors} actors, more than {max}; pass back a context \
         the server returned"
    )]
    ContextTooLarge { actors: usize, max: usize },
    #[error("this shard has used up its version counters; please report this bug")]
    CountersExhausted,
}

/// Which stored versions a write supersedes.
#[derive(Debug, Clone, Copy)]
pub enum Supersede<'c> {
    /// Every version this node has: a write without a context (every RESP write), as Redis
    /// users expect of SET.
    Local,
    /// Exactly the versions this causal context covers; the others stay as siblings.
    Context(&'c VersionVector),
}

/// The key's next versions after writing `v` over `old`, with the new version's dot. Its
/// counter is above `floor`: the highest counter this shard has minted (see
/// [`super::dvv::Siblings::update_from`]). A context claiming more of this node than that was
/// not made by it and is refused.
pub fn next_entry(
    old: Option<&Entry>,
    key: &[u8],
    sup: Supersede<'_>,
    v: VersionRef<'_>,
    floor: u64,
    p: &VersionPolicy,
) -> Result<(Entry, Dot), WriteError> {
    if floor >= MAX_COUNTER - 1 {
        return Err(WriteError::CountersExhausted);
    }
    let mut versions: Versions<'_> = match sup {
        // Supersedes every version: only the old context is needed, not the values.
        Supersede::Local => old
            .map(|e| Versions::from_parts(e.context(), []))
            .and_then(Result::ok)
            .unwrap_or_default(),
        Supersede::Context(_) => old.map(Entry::versions).unwrap_or_default(),
    };
    let dot = match sup {
        Supersede::Local => versions.overwrite_from(p.actor, floor, v),
        Supersede::Context(ctx) => {
            // A key's own context may have grown past the bound (a fresh actor per crash that
            // may have lost sent writes, or per start under --fsync off): what the server
            // handed out is always accepted back.
            if ctx.len() > MAX_CONTEXT_ACTORS {
                let max = old.map_or(0, |e| e.context().len()).max(MAX_CONTEXT_ACTORS);
                if ctx.len() > max {
                    return Err(WriteError::ContextTooLarge {
                        actors: ctx.len(),
                        max,
                    });
                }
            }
            let claimed = ctx.get(p.actor);
            if claimed > floor {
                return Err(WriteError::ForgedContext {
                    claimed,
                    made: floor,
                });
            }
            // Last-write-wins never keeps siblings, so there is nothing to bound.
            if p.conflicts == Conflicts::Siblings {
                versions.check_update(ctx, p.max_siblings)?;
            }
            versions.update_from(ctx, p.actor, floor, v)
        }
    };
    if p.conflicts == Conflicts::Lww {
        resolve_lww(&mut versions);
    }
    Ok((Entry::new(key, &versions), dot))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A key written through 70 actors (crashes that each took a fresh one) takes its own
    /// context back; a wider one, or one as wide for a new key, is refused.
    #[test]
    fn a_context_past_the_bound_is_taken_back_only_if_the_key_has_one_as_wide() {
        let v = VersionRef::value(b"v", 1, None);
        let policy = |actor| VersionPolicy {
            actor,
            ..VersionPolicy::default()
        };
        let mut entry: Option<Entry> = None;
        for actor in 1..=70 {
            let (e, _) = next_entry(entry.as_ref(), b"k", Supersede::Local, v, 0, &policy(actor))
                .expect("a write without a context");
            entry = Some(e);
        }
        let ctx = entry.as_ref().map(Entry::context).unwrap_or_default();
        assert_eq!(ctx.len(), 70);
        let write = |old: Option<&Entry>, ctx: &VersionVector| {
            next_entry(old, b"k", Supersede::Context(ctx), v, 0, &policy(1000)).map(|_| ())
        };
        assert_eq!(write(entry.as_ref(), &ctx), Ok(()));
        let mut wider = ctx.clone();
        wider.add_dot(Dot {
            actor: 5000,
            counter: 1,
        });
        assert_eq!(
            write(entry.as_ref(), &wider),
            Err(WriteError::ContextTooLarge {
                actors: 71,
                max: 70
            })
        );
        assert_eq!(
            write(None, &ctx),
            Err(WriteError::ContextTooLarge {
                actors: 70,
                max: MAX_CONTEXT_ACTORS
            })
        );
    }
}
