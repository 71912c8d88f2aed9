//! The cluster flags (src/config/cluster.rs): parsing, defaults, the config file, and every
//! validation rule with the error it gives.

use clap::Parser;
use ringkv::config::*;

fn addr(s: &str) -> Result<PeerAddr, String> {
    s.parse()
}

const SECRET: &str = "0123456789abcdef";

/// The configuration of `ringkv --threads 1 <args>`, or the error it is refused with.
fn cfg(args: &[&str]) -> Result<Config, String> {
    let argv = ["ringkv", "--threads", "1"].iter().chain(args);
    let cli = Cli::try_parse_from(argv).map_err(|e| e.to_string())?;
    Config::from_cli(cli).map_err(|e| e.to_string())
}

fn refused(args: &[&str], want: &str) {
    match cfg(args) {
        Ok(_) => panic!("{args:?} accepted"),
        Err(e) => assert!(e.contains(want), "{args:?}: {e:?} does not say {want:?}"),
    }
}

#[test]
fn defaults_are_a_standalone_node() {
    let c = cfg(&[]).unwrap();
    let cl = &c.cluster;
    assert!(!c.clustered());
    assert!(cl.peers.is_empty() && cl.secret.is_none() && cl.zone.is_empty());
    assert_eq!(
        (cl.partitions, cl.vnodes),
        (DEFAULT_PARTITIONS, DEFAULT_VNODES)
    );
    assert_eq!((cl.n, cl.w, cl.r), (3, 2, 2));
    assert!(cl.hinted_handoff);
    assert_eq!(cl.phi_convict_threshold, 8.0);
    assert_eq!(cl.peer_timeout_ms, 2000);
    assert!(c.read_your_writes());
    assert_eq!(c.advertise(4321).to_string(), "127.0.0.1:4321");
}

#[test]
fn peers_are_a_list_and_need_the_secret() {
    let c = cfg(&[
        "--peers",
        "a:1,b.example:2",
        "--peers",
        "[::1]:3",
        "--peers",
        "a:1,",
        "--cluster-secret",
        SECRET,
    ])
    .unwrap();
    let peers: Vec<String> = c.cluster.peers.iter().map(|p| p.to_string()).collect();
    assert_eq!(
        peers,
        ["a:1", "b.example:2", "[::1]:3"],
        "in order, duplicates dropped"
    );
    assert!(c.clustered());
    assert_eq!(
        c.cluster.secret.as_ref().map(Secret::as_bytes),
        Some(SECRET.as_bytes())
    );

    refused(
        &["--peers", "a:1"],
        "--peers needs --cluster-secret: peers authenticate each other with it",
    );
    refused(
        &["--peers", "a:1", "--cluster-secret", ""],
        "needs --cluster-secret",
    );
    refused(
        &["--peers", "a", "--cluster-secret", SECRET],
        "--peers \"a\" is not HOST:PORT",
    );
    // An empty list is standalone; the secret alone is cluster mode.
    assert!(!cfg(&["--peers", ""]).unwrap().clustered());
    let alone = cfg(&["--cluster-secret", SECRET]).unwrap();
    assert!(alone.clustered() && alone.cluster.peers.is_empty());
    refused(
        &["--cluster-secret", "short"],
        "at least 16 bytes (this one has 5)",
    );
}

#[test]
fn advertise() {
    let c = cfg(&["--advertise", "node1.lan:7000"]).unwrap();
    assert_eq!(c.advertise(1).to_string(), "node1.lan:7000");
    refused(
        &["--advertise", "node1.lan:0"],
        "--advertise \"node1.lan:0\" is not HOST:PORT",
    );
    // A wildcard bind is no address to dial: cluster mode needs --advertise then.
    let wild = [
        "--bind",
        "0.0.0.0",
        "--password",
        "p",
        "--cluster-secret",
        SECRET,
    ];
    refused(&wild, "set --advertise HOST:PORT");
    let c = cfg(&[&wild[..], &["--advertise", "10.0.0.5:7379"]].concat()).unwrap();
    assert_eq!(c.advertise(1).to_string(), "10.0.0.5:7379");
    assert_eq!(
        cfg(&["--bind", "::1"]).unwrap().advertise(9).to_string(),
        "[::1]:9"
    );
}

#[test]
fn zone() {
    assert_eq!(
        cfg(&["--zone", "eu-west-1a"]).unwrap().cluster.zone,
        "eu-west-1a"
    );
    refused(
        &["--zone", &"z".repeat(65)],
        "at most 64 bytes (this one has 65)",
    );
    assert!(cfg(&["--zone", &"z".repeat(64)]).is_ok());
    refused(&["--zone", "rack 1"], "printable ASCII without spaces");
    refused(&["--zone", "zoné"], "printable ASCII");
}

#[test]
fn ring_shape() {
    assert_eq!(cfg(&["--partitions", "1"]).unwrap().cluster.partitions, 1);
    assert_eq!(
        cfg(&["--partitions", "65536"]).unwrap().cluster.partitions,
        65536
    );
    refused(
        &["--partitions", "1000"],
        "--partitions 1000 must be a power of two",
    );
    refused(
        &["--partitions", "0"],
        "--partitions 0 must be between 1 and 65536",
    );
    refused(&["--partitions", "131072"], "between 1 and 65536");
    refused(
        &["--partitions", "8", "--shards", "16"],
        "--partitions 8 must be at least --shards 16",
    );
    assert_eq!(cfg(&["--vnodes", "4096"]).unwrap().cluster.vnodes, 4096);
    refused(&["--vnodes", "0"], "--vnodes 0 must be between 1 and 4096");
    refused(
        &["--vnodes", "4097"],
        "--vnodes 4097 must be between 1 and 4096",
    );
}

#[test]
fn quorums() {
    let c = cfg(&["--n", "5", "--w", "1", "--r", "1"]).unwrap();
    assert_eq!((c.cluster.n, c.cluster.w, c.cluster.r), (5, 1, 1));
    assert!(
        !c.read_your_writes(),
        "W + R <= N is allowed, not read-your-writes"
    );
    assert!(cfg(&["--n", "3", "--w", "3", "--r", "1"])
        .unwrap()
        .read_your_writes());
    // N = 1: the quorums default to 1 rather than to an invalid 2.
    let one = cfg(&["--n", "1"]).unwrap();
    assert_eq!((one.cluster.w, one.cluster.r), (1, 1));
    refused(&["--n", "0"], "--n 0 must be between 1 and 16");
    refused(&["--n", "17"], "--n 17 must be between 1 and 16");
    refused(&["--w", "4"], "--w 4 must be between 1 and --n 3");
    refused(&["--r", "0"], "--r 0 must be between 1 and --n 3");
    refused(
        &["--n", "2", "--r", "3"],
        "--r 3 must be between 1 and --n 2",
    );
}

#[test]
fn handoff_detector_and_peer_timeout() {
    assert!(
        !cfg(&["--hinted-handoff", "off"])
            .unwrap()
            .cluster
            .hinted_handoff
    );
    assert!(
        cfg(&["--hinted-handoff", "on"])
            .unwrap()
            .cluster
            .hinted_handoff
    );
    refused(&["--hinted-handoff", "maybe"], "maybe");
    let phi = |v: &str| cfg(&["--phi-convict-threshold", v]);
    assert_eq!(phi("12.5").unwrap().cluster.phi_convict_threshold, 12.5);
    assert_eq!(phi("32").unwrap().cluster.phi_convict_threshold, 32.0);
    for bad in ["0", "-1", "32.5", "NaN", "inf"] {
        refused(
            &["--phi-convict-threshold", bad],
            "must be above 0 and at most 32",
        );
    }
    assert_eq!(
        cfg(&["--peer-timeout-ms", "1"])
            .unwrap()
            .cluster
            .peer_timeout_ms,
        1
    );
    refused(
        &["--peer-timeout-ms", "0"],
        "--peer-timeout-ms 0 must be between 1 and 3600000",
    );
    refused(
        &["--peer-timeout-ms", "3600001"],
        "must be between 1 and 3600000",
    );
}

#[test]
fn cluster_settings_in_the_config_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("cluster.toml");
    std::fs::write(
        &path,
        "peers = [\"a:1\", \"b:2\"]\ncluster_secret = \"0123456789abcdef\"\n\
         advertise = \"me:9\"\nzone = \"z1\"\npartitions = 256\nvnodes = 64\nn = 5\n\
         w = 3\nr = 3\nhinted-handoff = \"off\"\nphi_convict_threshold = 10.0\n\
         peer-timeout-ms = 500\n",
    )
    .unwrap();
    let file = path.to_str().unwrap();
    let c = cfg(&["--config", file]).unwrap();
    let cl = &c.cluster;
    assert_eq!(cl.peers.len(), 2);
    assert!(c.clustered());
    assert_eq!(c.advertise(1).to_string(), "me:9");
    assert_eq!(cl.zone, "z1");
    assert_eq!(
        (cl.partitions, cl.vnodes, cl.n, cl.w, cl.r),
        (256, 64, 5, 3, 3)
    );
    assert!(!cl.hinted_handoff);
    assert_eq!((cl.phi_convict_threshold, cl.peer_timeout_ms), (10.0, 500));
    // Flags win; peers may also be one comma-separated string.
    let c = cfg(&["--config", file, "--peers", "c:3", "--n", "4"]).unwrap();
    assert_eq!(c.cluster.peers.len(), 1);
    assert_eq!(c.cluster.n, 4);
    std::fs::write(
        &path,
        "peers = \"a:1,b:2,c:3\"\ncluster-secret = \"0123456789abcdef\"\n",
    )
    .unwrap();
    assert_eq!(cfg(&["--config", file]).unwrap().cluster.peers.len(), 3);
    std::fs::write(&path, "peers = \"a:1\"\n").unwrap();
    refused(&["--config", file], "--peers needs --cluster-secret");
}

#[test]
fn peer_addresses() {
    let ok = |s: &str, host: &str, port: u16| {
        assert_eq!(
            addr(s),
            Ok(PeerAddr {
                host: host.into(),
                port
            }),
            "{s}"
        )
    };
    ok("10.0.0.1:7379", "10.0.0.1", 7379);
    ok(" node-2.example.com:1 ", "node-2.example.com", 1);
    ok("db_1:65535", "db_1", 65535);
    ok("[::1]:7379", "::1", 7379);
    assert_eq!(addr("[::1]:7379").unwrap().to_string(), "[::1]:7379");
    assert_eq!(addr("a:7").unwrap().to_string(), "a:7");
    for (bad, why) in [
        ("host", "no :PORT"),
        ("host:0", "not a port"),
        ("host:65536", "not a port"),
        ("host:", "not a port"),
        (":7379", "not a host"),
        ("::1:7379", "brackets"),
        ("[::1]7379", "[ADDR]:PORT"),
        ("[nope]:1", "not an IPv6"),
        ("a b:1", "not a host"),
    ] {
        let err = addr(bad).expect_err(bad);
        assert!(err.contains(why), "{bad}: {err}");
    }
    let long = format!("{}:1", "a".repeat(MAX_PEER_ADDR_BYTES));
    assert!(addr(&long).unwrap_err().contains("longer"));
}

#[test]
fn the_secret_is_hidden_from_debug() {
    let s: Secret = "0123456789abcdef-very-secret".parse().unwrap();
    assert!(!format!("{s:?}").contains("very-secret"));
}
