//! The rules that keep a node from covering versions it lost in a crash (Riak's "kv679",
//! `ringkv::actor`): a coordinator sends a write to the other replicas only once it is durable
//! at home, and a start takes a fresh dot actor only when the previous run may have lost
//! records it had shipped (an unclean stop without `--fsync always`, then a reboot; `--repair`;
//! `--fsync off`).

mod common;

use std::path::Path;

use common::cluster::{Cluster, CONVERGE};
use common::resp::{Conn, Reply};
use common::*;

/// Starts a server on `dir` as if on boot `boot`: the server and its dot actor.
fn start(dir: &Path, boot: &str, extra: &[&str]) -> (Server, String) {
    let mut args = vec!["--test-boot-id", boot];
    args.extend_from_slice(extra);
    let s = Server::start_in(dir, &args);
    let actor = info_server(&s, "dot_actor");
    (s, actor)
}

#[test]
fn the_dot_actor_changes_only_after_a_crash_that_may_have_lost_shipped_records() {
    let dir = tempfile::tempdir().expect("tempdir");
    let dir = dir.path();
    let (batch, always) = (&["--fsync", "batch"][..], &["--fsync", "always"][..]);
    let (s, first) = start(dir, "boot-1", batch);
    assert_ne!(
        first,
        info_server(&s, "node_id"),
        "a new directory draws its own actor"
    );
    s.kill();

    // A process crash: the OS kept every record the run wrote, so it keeps its actor.
    let (s, actor) = start(dir, "boot-1", batch);
    assert_eq!(actor, first, "kept after a crash in the same boot");
    s.kill();

    // A crash, then a reboot, under --fsync batch: records it shipped may be gone here.
    let (s, second) = start(dir, "boot-2", batch);
    assert_ne!(second, first, "a new actor after a crash and a reboot");
    assert!(s
        .log_text()
        .contains("dot actor new: unclean stop and a reboot"));
    // A clean stop syncs everything: a reboot after it keeps the actor.
    assert!(s.terminate().success());
    let (s, actor) = start(dir, "boot-3", batch);
    assert_eq!(actor, second, "kept after a clean stop");
    s.kill();

    // A run under --fsync always after a crash under batch on the same boot keeps the actor,
    // but the crashed run's records may still be unsynced: until a clean stop it records
    // batch, so a crash and a reboot take a new actor.
    let (s, actor) = start(dir, "boot-3", always);
    assert_eq!(actor, second, "kept after a crash in the same boot");
    s.kill();
    let (s, third) = start(dir, "boot-4", always);
    assert_ne!(
        third, second,
        "the batch run's records may be lost: a new actor"
    );
    s.kill();
    // Under --fsync always from its start nothing left the node unsynced: a crash and a
    // reboot keep the actor.
    let (s, actor) = start(dir, "boot-5", always);
    assert_eq!(actor, third, "kept: the crashed run synced");
    assert!(s.terminate().success());

    // --repair may drop damaged records, which may have been sent: a new actor.
    let (s, fourth) = start(dir, "boot-5", &["--repair"]);
    assert_ne!(fourth, third, "--repair: a new actor");
    s.kill();

    // --fsync off keeps nothing: every start is a new actor.
    let (_s, actor) = start(dir, "boot-5", &["--fsync", "off"]);
    assert_ne!(actor, fourth, "--fsync off: a new actor");
}

/// The write's REPLICATE, and a read repair carrying it, wait for the coordinator's own fsync
/// (held here): a peer that answered a later message on the same link has not got it. Before
/// the fix it had: the coordinator sent the entry at once, and a crash before its own WAL
/// write left the peers a version its next dot for the key would cover.
#[test]
fn a_coordinator_replicates_a_write_only_once_it_is_durable_at_home() {
    let hold_dir = tempfile::tempdir().expect("tempdir");
    let hold = hold_dir.path().join("hold");
    let hold_arg = hold.to_string_lossy().into_owned();
    let c = Cluster::start_each(4, &[], |i| match i {
        0 => vec![
            "--fsync".into(),
            "always".into(),
            "--test-hold-syncs-file".into(),
            hold_arg.clone(),
        ],
        _ => Vec::new(),
    });
    c.wait_converged();
    let map = c.map(0);
    let (p0, p1) = (c.ports[0], c.ports[1]);
    // k1: written through node 0, replicated to node 1. k2: node 0 does not own it and
    // FORWARDs it to node 1, its first owner, over the same link.
    let key = |want: &dyn Fn(&[u16]) -> bool| {
        (0..100_000)
            .map(|i| format!("k{i}"))
            .find(|k| want(map.owners(k.as_bytes())))
            .expect("a key with these owners")
    };
    let k1 = key(&|o| o.contains(&p0) && o.contains(&p1));
    let k2 = key(&|o| o.first() == Some(&p1) && !o.contains(&p0));

    std::fs::write(&hold, b"").expect("create the hold file");
    let mut writer = Conn::connect(c.node(0).addr);
    writer
        .send(&[b"SET", k1.as_bytes(), b"v1"])
        .expect("send SET");
    wait_until("node 0 to apply the write", CONVERGE, || {
        let Reply::Bulk(Some(b)) = c.conn(0).call_str(&["INFO", "keyspace"]) else {
            return false;
        };
        String::from_utf8_lossy(&b).contains("db0:keys=1,")
    });
    // Node 1 answers the forwarded GET after any frame node 0 sent it before.
    assert_eq!(c.conn(0).call_str(&["GET", &k2]), Reply::Bulk(None));
    assert_eq!(
        c.local(1, k1.as_bytes()),
        None,
        "node 1 got the write before node 0 synced it"
    );

    // A read through node 0 finds nodes 1 and 2 without the write: its read repair waits
    // for the same fsync before sending them node 0's copy.
    let mut reader = Conn::connect(c.node(0).addr);
    reader.send(&[b"GET", k1.as_bytes()]).expect("send GET");
    wait_until("node 0 to start a read repair", CONVERGE, || {
        c.info(0, "cluster_read_repairs")
            .and_then(|v| v.parse::<u64>().ok())
            .is_some_and(|n| n > 0)
    });
    assert_eq!(c.conn(0).call_str(&["GET", &k2]), Reply::Bulk(None));
    assert_eq!(
        c.local(1, k1.as_bytes()),
        None,
        "node 1 got node 0's copy by read repair before node 0 synced it"
    );

    std::fs::remove_file(&hold).expect("release the hold");
    assert_eq!(
        writer.read().expect("SET reply"),
        Reply::Simple("OK".into())
    );
    assert_eq!(
        reader.read().expect("GET reply"),
        Reply::Bulk(Some(b"v1".to_vec()))
    );
    wait_until("every replica to hold the write", CONVERGE, || {
        map.owners(k1.as_bytes()).iter().all(|p| {
            let i = c
                .ports
                .iter()
                .position(|q| q == p)
                .expect("an owner is a node");
            c.local(i, k1.as_bytes()).as_deref() == Some(&b"v1"[..])
        })
    });
}
