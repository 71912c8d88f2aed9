//! Many seeds per run: every acknowledged write must be readable from every node after the
//! heal. `SIM_SEED=<n>` runs one seed (printing its schedule); `SIM_SEEDS=<count>` and
//! `SIM_SEED_BASE=<first>` choose the range.

use ringkv_sim::run_seed;

fn env_u64(name: &str) -> Option<u64> {
    std::env::var(name).ok().and_then(|v| v.trim().parse().ok())
}

/// Logs of the nodes (each line in its host's span) when RUST_LOG is set.
fn logs() {
    if std::env::var_os("RUST_LOG").is_some() {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .with_test_writer()
            .try_init();
    }
}

#[test]
fn one_seed() {
    logs();
    let seed = env_u64("SIM_SEED").unwrap_or(1);
    let o = run_seed(seed).unwrap_or_else(|e| panic!("{e}"));
    for s in &o.schedule {
        println!("  {s}");
    }
    println!("{}", o.line());
    for l in o.lost.iter().take(20) {
        println!("  lost: {l}");
    }
    assert!(o.lost.is_empty(), "seed {seed} lost acknowledged writes");
}
