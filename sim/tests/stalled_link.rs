//! A partition drops the packets sent across it, and turmoil's TCP never retransmits them (as
//! a connection whose packets are black-holed, or whose middlebox state was lost): every peer
//! link that carried anything during the partition stalls for good. Once the network heals,
//! the nodes must notice (nothing read with calls waiting, `link::SILENT_LINK_TIMEOUTS`) and
//! reconnect. Before that fix, found by seed 1 of `seeds.rs`, writes at W=3 through the node
//! that had been cut off failed forever after the heal.

use std::cell::Cell;
use std::rc::Rc;
use std::time::Duration;

use ringkv_sim::resp::{Conn, Reply};
use ringkv_sim::rng::Rng;
use ringkv_sim::{builder, flags, start_nodes};

const CUT_MS: u64 = 1_500;
const HEAL_MS: u64 = 2_000;
/// Three peer timeouts of silence (900 ms), a redial backoff and a handshake fit well inside.
const RECOVER_LIMIT_MS: u64 = 4_000;

fn now_ms() -> u64 {
    turmoil::sim_elapsed().map_or(0, |d| d.as_millis() as u64)
}

#[test]
fn a_link_stalled_by_a_partition_reconnects_after_the_heal() {
    let seed = 7;
    let mut sim = builder(seed);
    let mut rng = Rng::new(seed);
    let names: Vec<String> = (1..=3).map(|i| format!("n{i}")).collect();
    let tmp = tempfile::tempdir().expect("tempdir");
    let _powers = start_nodes(&mut sim, &mut rng, &names, tmp.path(), &flags(3, 3));
    let recovered: Rc<Cell<Option<u64>>> = Rc::default();
    let before: Rc<Cell<u64>> = Rc::default();
    let (r, b) = (recovered.clone(), before.clone());
    sim.client("c", async move {
        tokio::time::sleep(Duration::from_millis(1_000)).await;
        let mut i = 0u64;
        let mut conn: Option<Conn> = None;
        while now_ms() < HEAL_MS + RECOVER_LIMIT_MS {
            let c = match &mut conn {
                Some(c) => c,
                None => match Conn::open("n1", Duration::from_secs(2)).await {
                    Ok(c) => conn.insert(c),
                    Err(_) => continue,
                },
            };
            let key = format!("k{i}");
            i += 1;
            let ok = matches!(
                tokio::time::timeout(Duration::from_secs(2), c.call(&[b"SET", key.as_bytes(), b"v"])).await,
                Ok(Ok(Reply::Status(ref s))) if s == "OK"
            );
            let t = now_ms();
            if ok && t < CUT_MS {
                b.set(b.get() + 1);
            }
            if ok && t > HEAL_MS {
                r.set(Some(t - HEAL_MS));
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Ok(())
    });
    let mut cut = false;
    let mut healed = false;
    loop {
        let now = sim.elapsed().as_millis() as u64;
        if !cut && now >= CUT_MS {
            sim.partition("n1", "n2");
            sim.partition("n1", "n3");
            cut = true;
        }
        if !healed && now >= HEAL_MS {
            sim.repair("n1", "n2");
            sim.repair("n1", "n3");
            healed = true;
        }
        match sim.step() {
            Ok(true) => break,
            Ok(false) => {}
            Err(e) => panic!("the simulation failed: {e}"),
        }
    }
    assert!(
        before.get() > 0,
        "no write at W=3 succeeded before the partition"
    );
    let ms = recovered.get().unwrap_or_else(|| {
        panic!("no write at W=3 through n1 succeeded in {RECOVER_LIMIT_MS} ms after the heal")
    });
    println!("first write at W=3 through n1 succeeded {ms} ms after the heal");
}
