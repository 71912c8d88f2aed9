//! The cluster layer of a node as its configuration asks (cluster mode: --cluster-secret):
//! the server binary and the simulator build it here, so both start a node the same way.

use std::sync::Arc;

use tracing::info;

use super::hints::Hints;
use super::layout_file::LayoutFile;
use super::stream::Streams;
use super::Cluster;
use crate::config::{Config, ConflictMode};
use crate::ring::layout::MemberState;
use crate::ring::membership::{Membership, Settings};
use crate::ring::{NodeId, RingError};

#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    #[error("can't read the stream progress file: {0} (check the data directory's permissions)")]
    Streams(std::io::Error),
    #[error("invalid cluster settings: {0}")]
    Settings(#[from] RingError),
    #[error("can't open the hint directory: {0} (check the data directory's permissions)")]
    Hints(std::io::Error),
    #[error("the saved cluster layout: {0}")]
    Layout(#[from] super::layout_file::LayoutFileError),
}

impl Cluster {
    /// The cluster layer for `config` (None outside cluster mode). `has_keys`: the store held
    /// keys at start.
    pub fn open(
        config: &Config,
        node_id: NodeId,
        has_keys: bool,
    ) -> Result<Option<Arc<Cluster>>, OpenError> {
        let cc = &config.cluster;
        let Some(secret) = &cc.secret else {
            return Ok(None);
        };
        let settings = Settings {
            partitions: cc.partitions,
            vnodes: cc.vnodes,
            n: cc.n as usize,
            w: cc.w as usize,
            r: cc.r as usize,
            lww: config.conflicts == ConflictMode::Lww,
            hinted_handoff: cc.hinted_handoff,
            phi_convict_threshold: cc.phi_convict_threshold,
        };
        let advertise = cc.advertise.as_ref().map(|a| a.to_string());
        let streams = Streams::open(config.data_dir.clone(), cc.stream_rate_bps)
            .map_err(OpenError::Streams)?;
        // A new, empty node started with --peers joins: it owns nothing until the partitions
        // it will own are copied to it, and a join interrupted by a restart goes on. A node
        // that was an owner starts as one; so do a node with no peers (a cluster of one,
        // joined later) and one holding keys from before membership was recorded.
        let state = if streams.was_member() {
            MemberState::Active
        } else if streams.has_history() {
            MemberState::Joining
        } else if cc.peers.is_empty() || has_keys {
            MemberState::Active
        } else {
            MemberState::Joining
        };
        let membership = Arc::new(Membership::new(
            node_id,
            settings,
            advertise.as_deref().unwrap_or(""),
            &cc.zone,
            state,
            cc.peers.iter().map(|p| p.to_string()).collect(),
        )?);
        // The members this node knew when it stopped: a restarted member must not route on a
        // ring of itself alone (see `layout_file`).
        let (layout_file, saved) = LayoutFile::open(&config.data_dir);
        match saved {
            Ok(Some(members)) => {
                let n = members.len();
                membership.restore(members);
                info!(members = n, path = %layout_file.path().display(), "layout restored");
            }
            Ok(None) => {}
            Err(e) => return Err(OpenError::Layout(e)),
        }
        let hints = Hints::open(config.data_dir.join("hints")).map_err(OpenError::Hints)?;
        hints.set_max_age(
            config.tombstone_grace_secs.saturating_mul(1000),
            membership.clone(),
        );
        Ok(Some(Arc::new(Cluster::new(
            membership,
            secret.as_bytes().to_vec(),
            advertise,
            cc.zone.clone(),
            hints,
            streams,
            layout_file,
        ))))
    }
}
