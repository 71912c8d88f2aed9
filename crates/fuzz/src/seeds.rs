//! Seed inputs for each target, made by the real encoders (frames by `Request::encode`, WAL
//! segments by the shard's WAL buffer behind a segment header, snapshots by
//! `snapshot::write`), plus edge cases. `cargo run -p ringkv-fuzz --bin gen-seeds` writes
//! them to `fuzz/corpus/<target>/seed-*`.

use std::path::Path;

use bytes::{Bytes, BytesMut};
use ringkv::disk::{Fs, RealFs};
use ringkv::snapshot;
use ringkv::store::entry::Versions;
use ringkv::store::VersionRef;
use ringkv::store::{Entry, Shard, Store, VectorClock};
use ringkv::wal::record;
use ringkv_proto::frame::{begin_frame, finish_frame, Opcode, Request, Status, FLAG_REPLY};
use ringkv_proto::key_hash;
use ringkv_proto::Value;

use crate::{FIX_CHECKSUMS, FIX_HEADER};

/// A named seed.
pub type Seed = (String, Vec<u8>);

/// A command as an argument vector.
fn args<'a>(a: &[&'a [u8]]) -> Request<'a> {
    Request::Command {
        args: a.iter().copied().collect(),
    }
}

fn frame_of(req: &Request<'_>, id: u64) -> Vec<u8> {
    let mut out = BytesMut::new();
    req.encode(id, &mut out);
    out.to_vec()
}

pub fn frame() -> Vec<Seed> {
    let hello = Request::Hello {
        min_version: 1,
        max_version: 1,
        password: b"",
        client_name: b"",
    };
    let hello_auth = Request::Hello {
        min_version: 1,
        max_version: 3,
        password: b"s3cret",
        client_name: b"kvsh",
    };
    let put = Request::Put {
        key: b"user:1",
        value: b"alice",
        context: b"",
        ttl_ms: 0,
    };
    let put_ttl = Request::Put {
        key: b"k",
        value: &[0, 1, 2, 255],
        context: &[1, 7, 3],
        ttl_ms: 60_000,
    };
    let reqs: Vec<(&str, Request<'_>)> = vec![
        ("hello", hello.clone()),
        ("hello-auth", hello_auth),
        ("ping", Request::Ping),
        ("get", Request::Get { key: b"user:1" }),
        ("get-empty-key", Request::Get { key: b"" }),
        ("put", put.clone()),
        ("put-ttl-context", put_ttl),
        (
            "delete",
            Request::Delete {
                key: b"user:1",
                context: &[1, 9, 1],
            },
        ),
        ("cmd-set", args(&[b"SET", b"a", b"1"])),
        ("cmd-incrby", args(&[b"INCRBY", b"n", b"5"])),
        ("cmd-ping", args(&[b"PING"])),
        (
            "cmd-11-args",
            args(&[
                b"MSET", b"a", b"1", b"b", b"2", b"c", b"3", b"d", b"4", b"e", b"5",
            ]),
        ),
    ];
    let mut seeds: Vec<Seed> = reqs
        .iter()
        .map(|(n, r)| (n.to_string(), frame_of(r, 7)))
        .collect();
    let mut pipeline = frame_of(&hello, 1);
    pipeline.extend(frame_of(&put, 2));
    pipeline.extend(frame_of(&Request::Get { key: b"user:1" }, 3));
    pipeline.extend(frame_of(&args(&[b"DEL", b"user:1"]), u64::MAX));
    seeds.push(("pipeline".into(), pipeline.clone()));
    seeds.push((
        "pipeline-torn".into(),
        pipeline[..pipeline.len() - 3].to_vec(),
    ));
    // Edge cases: lengths that lie, unknown opcodes, reply frames, counts that overflow.
    let mut raw = |name: &str, len: u32, opcode: u8, flags: u8, payload: &[u8]| {
        let mut f = len.to_be_bytes().to_vec();
        f.extend_from_slice(&42u64.to_be_bytes());
        f.extend_from_slice(&[opcode, flags, 0, 0]);
        f.extend_from_slice(payload);
        seeds.push((name.to_string(), f));
    };
    raw("len-max", u32::MAX, 0x10, 0, &[0, 0, 0, 1, b'a']);
    raw("len-short", 11, 0x02, 0, &[]);
    raw("len-zero", 0, 0x02, 0, &[]);
    raw("len-64mib", 64 << 20, 0x11, 0, &[0; 8]);
    raw("unknown-opcode", 12, 0x7f, 0, &[]);
    raw("reply-flag", 12, 0x02, 1, &[]);
    raw(
        "get-len-lies",
        12 + 5,
        0x10,
        0,
        &[0xff, 0xff, 0xff, 0xff, b'a'],
    );
    raw("cmd-argc-max", 12 + 4, 0x20, 0, &[0xff, 0xff, 0xff, 0xff]);
    raw("cmd-argc-zero", 12 + 4, 0x20, 0, &[0, 0, 0, 0]);
    raw("cmd-argc-11", 12 + 4, 0x20, 0, &[0, 0, 0, 11]);
    raw(
        "put-trailing",
        12 + 21,
        0x11,
        0,
        &[
            0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 9,
        ],
    );
    raw("hello-truncated", 12 + 3, 0x01, 0, &[0, 1, 0]);
    // Reply frames, as the server encodes them and clients decode them.
    let b = |s: &'static [u8]| Bytes::from_static(s);
    let replies = [
        ("reply-ok", Value::Simple(b(b"OK"))),
        ("reply-error", Value::Error(b(b"ERR syntax error"))),
        ("reply-int", Value::Int(-42)),
        ("reply-nil", Value::Nil),
        ("reply-bulk", Value::Bulk(b(b"hello"))),
        (
            "reply-nested",
            Value::Array(vec![
                Value::Array(vec![Value::Array(vec![Value::Nil, Value::Int(1)])]),
                Value::Bulk(b(b"x")),
            ]),
        ),
        (
            "reply-versioned",
            Value::Versioned {
                context: b(&[1, 7, 3]),
                values: vec![b(b"a"), b(b"sibling")],
            },
        ),
    ];
    for (name, v) in replies {
        let mut out = BytesMut::new();
        let start = begin_frame(&mut out, 9, Opcode::Get as u8, FLAG_REPLY);
        v.encode(&mut out);
        finish_frame(&mut out, start, Status::Ok);
        seeds.push((name.to_string(), out.to_vec()));
    }
    seeds
}

/// A multibulk command, as clients send it.
pub fn multibulk(args: &[&[u8]]) -> Vec<u8> {
    let mut out = format!("*{}\r\n", args.len()).into_bytes();
    for a in args {
        out.extend_from_slice(format!("${}\r\n", a.len()).as_bytes());
        out.extend_from_slice(a);
        out.extend_from_slice(b"\r\n");
    }
    out
}

pub fn resp() -> Vec<Seed> {
    let mut seeds: Vec<Seed> = vec![
        ("mb-get".into(), multibulk(&[b"GET", b"a"])),
        (
            "mb-set".into(),
            multibulk(&[b"SET", b"key:1", b"hello world"]),
        ),
        (
            "mb-binary".into(),
            multibulk(&[b"SET", b"k", b"\r\n\0\xff"]),
        ),
        ("mb-empty-arg".into(), multibulk(&[b"SET", b"", b""])),
        (
            "mb-11-args".into(),
            multibulk(&[
                b"MSET", b"a", b"1", b"b", b"2", b"c", b"3", b"d", b"4", b"e", b"5",
            ]),
        ),
        (
            "mb-auth".into(),
            multibulk(&[b"AUTH", b"default", b"s3cret"]),
        ),
        ("inline-ping".into(), b"PING\r\n".to_vec()),
        ("inline-lf".into(), b"SET a  1\n".to_vec()),
        ("inline-tabs".into(), b"\tGET\t a \r\n".to_vec()),
        (
            "inline-quoted".into(),
            b"SET k \"a\\x41\\n\\t\\\"b\" 'it\\'s'\r\n".to_vec(),
        ),
        ("inline-unbalanced".into(), b"SET k \"abc\r\n".to_vec()),
        (
            "inline-quote-then-char".into(),
            b"SET \"k\"x 1\r\n".to_vec(),
        ),
        (
            "inline-nul-in-quotes".into(),
            b"SET \"a\0b\" 1\r\n".to_vec(),
        ),
        ("inline-empty-lines".into(), b"\r\n\n \r\nPING\r\n".to_vec()),
        ("inline-cr-only".into(), b"PING\r".to_vec()),
        ("mb-zero".into(), b"*0\r\n".to_vec()),
        ("mb-negative".into(), b"*-1\r\n".to_vec()),
        ("mb-count-overflow".into(), b"*2147483648\r\n".to_vec()),
        (
            "mb-count-i64-overflow".into(),
            b"*9223372036854775808\r\n".to_vec(),
        ),
        ("mb-count-huge".into(), b"*1048577\r\n$1\r\na\r\n".to_vec()),
        ("mb-bulk-minus-one".into(), b"*1\r\n$-1\r\n".to_vec()),
        ("mb-bulk-huge".into(), b"*1\r\n$600000000\r\n".to_vec()),
        (
            "mb-bulk-over-preauth".into(),
            b"*1\r\n$16385\r\nab".to_vec(),
        ),
        (
            "mb-bulk-not-digits".into(),
            b"*1\r\n$3a\r\nabc\r\n".to_vec(),
        ),
        ("mb-no-dollar".into(), b"*2\r\n$3\r\nGET\r\n:1\r\n".to_vec()),
        ("mb-missing-crlf".into(), b"*1\r\n$3\r\nGETxx".to_vec()),
        ("mb-torn".into(), b"*2\r\n$3\r\nGET\r\n$1\r".to_vec()),
        (
            "mb-nested".into(),
            b"*1\r\n*1\r\n*1\r\n*1\r\n*1\r\n*1\r\n$1\r\na\r\n".to_vec(),
        ),
        ("mb-lf-only".into(), b"*1\n$4\nPING\r\n".to_vec()),
        ("mb-plus-sign".into(), b"*+1\r\n$4\r\nPING\r\n".to_vec()),
    ];
    let mut pipeline = multibulk(&[b"SET", b"a", b"1"]);
    pipeline.extend_from_slice(b"GET a\r\n");
    pipeline.extend(multibulk(&[b"INCR", b"n"]));
    pipeline.extend_from_slice(b"*0\r\nPING\n");
    seeds.push(("pipeline-mixed".into(), pipeline));
    let mut long = b"SET k ".to_vec();
    long.resize(2000, b'v');
    long.extend_from_slice(b"\r\n");
    seeds.push(("inline-long".into(), long));
    seeds
}

/// A key written once through each of `nodes` in turn: one version, a context naming them all.
fn entry(key: &[u8], value: &[u8], ttl: Option<u64>, tombstone: bool, nodes: &[u64]) -> Entry {
    let v = if tombstone {
        VersionRef::tombstone(1_700_000_000_000)
    } else {
        VersionRef::value(value, 1_700_000_000_000, ttl)
    };
    let mut s = Versions::new();
    for &n in nodes {
        s.overwrite(n, v);
    }
    Entry::new(key, &s)
}

/// A shard with logging on, after a few mutations: its WAL buffer is what the writer appends.
fn logged_shard(n: usize) -> Shard {
    let mut s = Shard::default();
    s.wal.enabled = true;
    for i in 0..n {
        let key = format!("key:{i}");
        let e = entry(
            key.as_bytes(),
            format!("value-{i}").as_bytes(),
            None,
            false,
            &[7],
        );
        s.put(key_hash(e.key()), e);
    }
    s
}

/// A WAL input for the `wal` target: mode byte, then the segment.
fn wal_seed(mode: u8, seg: &[u8]) -> Vec<u8> {
    let mut v = vec![mode];
    v.extend_from_slice(seg);
    v
}

pub fn wal() -> Vec<Seed> {
    let shard_id = 3;
    let mut s = logged_shard(4);
    let ttl = entry(b"session", b"x", Some(1_800_000_000_000), false, &[7, 9]);
    s.put(key_hash(b"session"), ttl);
    let dead = entry(b"gone", b"", None, true, &[1, 2, 3]);
    s.put(key_hash(b"gone"), dead);
    s.remove(key_hash(b"key:1"), b"key:1");
    let mut seg = record::segment_header(shard_id, 1).to_vec();
    seg.extend_from_slice(&s.wal.buf);
    let clean = seg.clone();
    s.wal.buf.clear();
    s.clear();
    let e = entry(b"after", b"clear", None, false, &[7]);
    s.put(key_hash(b"after"), e);
    seg.extend_from_slice(&s.wal.buf);
    let full = seg.clone();
    let mut zero_tail = full.clone();
    zero_tail.resize(full.len() + 256, 0);
    let mut seeds: Vec<Seed> = vec![
        ("clean".into(), wal_seed(0, &clean)),
        ("clear-and-put".into(), wal_seed(0, &full)),
        ("zero-filled-tail".into(), wal_seed(0, &zero_tail)),
        (
            "fix-all".into(),
            wal_seed(FIX_HEADER | FIX_CHECKSUMS, &full),
        ),
        (
            "header-only".into(),
            wal_seed(0, &record::segment_header(shard_id, 1)),
        ),
        ("empty".into(), vec![0]),
        (
            "wrong-shard".into(),
            wal_seed(0, &{
                let mut v = full.clone();
                v[12] = 9;
                v
            }),
        ),
        (
            "bad-magic".into(),
            wal_seed(0, &{
                let mut v = full.clone();
                v[0] = b'X';
                v
            }),
        ),
        ("torn-tail".into(), wal_seed(0, &full[..full.len() - 5])),
        (
            "torn-header".into(),
            wal_seed(0, &full[..record::SEGMENT_HEADER + 9]),
        ),
        (
            "flipped-byte".into(),
            wal_seed(0, &{
                let mut v = full.clone();
                v[record::SEGMENT_HEADER + 30] ^= 1;
                v
            }),
        ),
        (
            "flipped-fix-crc".into(),
            wal_seed(FIX_CHECKSUMS, &{
                let mut v = full.clone();
                v[record::SEGMENT_HEADER + 30] ^= 1;
                v
            }),
        ),
    ];
    // Records built one by one: odd kinds, sequence order, lengths that lie.
    let one = |kind: u8, seq: u64, payload: &[u8]| {
        let mut v = record::segment_header(shard_id, 1).to_vec();
        record::append(&mut v, kind, seq, payload);
        v
    };
    seeds.push((
        "del-record".into(),
        wal_seed(0, &one(record::DEL, 1, b"key:1")),
    ));
    seeds.push(("unknown-kind".into(), wal_seed(0, &one(9, 1, b"x"))));
    seeds.push((
        "bad-entry-payload".into(),
        wal_seed(0, &one(record::VERSIONS, 1, &[0, 200, 1, 0])),
    ));
    // A multi-shard write as the store logs it: one TXN record holding every shard's part.
    let mut t = Vec::new();
    record::txn::begin(&mut t, 2);
    let at = record::txn::begin_part(&mut t, 1, 9);
    record::txn::push_record(&mut t, record::DEL, b"src");
    record::txn::end_part(&mut t, at, 1);
    let at = record::txn::begin_part(&mut t, shard_id, 1);
    let e = entry(b"dst", b"moved", None, false, &[7]);
    record::txn::push_record(&mut t, record::VERSIONS, e.as_bytes());
    record::txn::end_part(&mut t, at, 1);
    seeds.push(("txn-record".into(), wal_seed(0, &one(record::TXN, 1, &t))));
    let mut t_bad = t.clone();
    t_bad[..4].copy_from_slice(&u32::MAX.to_le_bytes());
    seeds.push((
        "txn-parts-max".into(),
        wal_seed(FIX_CHECKSUMS, &one(record::TXN, 1, &t_bad)),
    ));
    let mut out_of_order = one(record::DEL, 5, b"a");
    record::append(&mut out_of_order, record::DEL, 5, b"b");
    seeds.push(("seq-repeated".into(), wal_seed(0, &out_of_order)));
    let mut huge = one(record::DEL, 1, b"a");
    let at = record::SEGMENT_HEADER + 4;
    huge[at..at + 4].copy_from_slice(&u32::MAX.to_le_bytes());
    seeds.push(("len-max".into(), wal_seed(FIX_CHECKSUMS, &huge)));
    let mut big = one(record::DEL, 1, b"a");
    big[at..at + 4].copy_from_slice(&(1u32 << 31).to_le_bytes());
    seeds.push(("len-2gib".into(), wal_seed(0, &big)));
    // Format 1 segments, which this build still reads (written by older builds).
    let mut v1 = record::segment_header_version(record::FORMAT_VERSION_V1, shard_id, 1).to_vec();
    record::append_v1(&mut v1, record::DEL, 1, b"key:1");
    record::append_v1(&mut v1, record::CLEAR, 2, b"");
    let mut clock = VectorClock::new();
    clock.increment(7);
    let e = ringkv::store::legacy::encode_v1(b"v1", b"old", &clock.encoded(), 1, None, false);
    record::append_v1(&mut v1, record::PUT_V1, 3, &e);
    seeds.push(("v1-clean".into(), wal_seed(0, &v1)));
    seeds.push(("v1-torn".into(), wal_seed(0, &v1[..v1.len() - 4])));
    seeds.push((
        "v1-flipped-fix-all".into(),
        wal_seed(FIX_HEADER | FIX_CHECKSUMS, &{
            let mut v = v1.clone();
            v[record::SEGMENT_HEADER + 8] ^= 0x10;
            v
        }),
    ));
    let mut v3 = full.clone();
    v3[8] = 3;
    seeds.push(("version-3".into(), wal_seed(0, &v3)));
    let mut junk_after = full.clone();
    junk_after.extend_from_slice(b"\x01\x02junk");
    seeds.push(("junk-after".into(), wal_seed(0, &junk_after)));
    seeds
}

/// A snapshot of one shard holding `entries`, written by `snapshot::write` to a temporary
/// directory and read back.
fn snapshot_file(entries: &[Entry], shard_id: usize, seq: u64) -> std::io::Result<Vec<u8>> {
    let dir = std::env::temp_dir().join(format!("ringkv-fuzz-seeds-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let store = Store::new(shard_id + 1);
    for e in entries {
        store.lock(shard_id).put(key_hash(e.key()), e.clone());
    }
    let written = snapshot::write(&RealFs, &store, shard_id, seq, &dir);
    let path = dir.join(snapshot::snapshot_name(seq));
    let bytes = written
        .map_err(std::io::Error::other)
        .and_then(|_| RealFs.read(&path).map(|c| c.to_vec()));
    let _ = std::fs::remove_dir_all(&dir);
    bytes
}

fn snap_seed(mode: u8, file: &[u8]) -> Vec<u8> {
    let mut v = vec![mode];
    v.extend_from_slice(file);
    v
}

pub fn snapshot() -> std::io::Result<Vec<Seed>> {
    let many: Vec<Entry> = (0..40)
        .map(|i| {
            let k = format!("k{i}");
            let ttl = (i % 3 == 0).then_some(1_800_000_000_000 + i as u64);
            entry(
                k.as_bytes(),
                &vec![b'v'; i],
                ttl,
                i % 7 == 0,
                &[1, 2 + i as u64],
            )
        })
        .collect();
    let empty = snapshot_file(&[], 0, 0)?;
    let small = snapshot_file(&many[..3], 0, 17)?;
    let full = snapshot_file(&many, 2, 99)?;
    let mut seeds: Vec<Seed> = vec![
        ("empty".into(), snap_seed(0, &empty)),
        ("three".into(), snap_seed(0, &small)),
        ("forty-shard-2".into(), snap_seed(FIX_HEADER, &full)),
        (
            "three-fix-all".into(),
            snap_seed(FIX_HEADER | FIX_CHECKSUMS, &small),
        ),
        ("truncated".into(), snap_seed(0, &small[..small.len() - 10])),
        (
            "header-only".into(),
            snap_seed(0, &small[..snapshot::HEADER]),
        ),
        ("wrong-shard".into(), snap_seed(0, &full)),
    ];
    let foot = small.len() - 16;
    let mut bad_count = small.clone();
    bad_count[foot + 8] = 200;
    seeds.push((
        "footer-count-wrong".into(),
        snap_seed(FIX_CHECKSUMS, &bad_count),
    ));
    let mut huge_count = small.clone();
    huge_count[foot + 8..].copy_from_slice(&u64::MAX.to_le_bytes());
    seeds.push(("footer-count-huge".into(), snap_seed(0, &huge_count)));
    let mut block_len_max = small.clone();
    let at = snapshot::HEADER;
    block_len_max[at..at + 4].copy_from_slice(&u32::MAX.to_le_bytes());
    seeds.push((
        "block-len-max".into(),
        snap_seed(FIX_CHECKSUMS, &block_len_max),
    ));
    let mut entry_len_max = small.clone();
    entry_len_max[at + 8..at + 12].copy_from_slice(&u32::MAX.to_le_bytes());
    seeds.push((
        "entry-len-max".into(),
        snap_seed(FIX_CHECKSUMS, &entry_len_max),
    ));
    let mut flipped = small.clone();
    flipped[at + 20] ^= 0x40;
    seeds.push(("flipped-byte".into(), snap_seed(0, &flipped)));
    seeds.push(("flipped-fix-crc".into(), snap_seed(FIX_CHECKSUMS, &flipped)));
    let mut trailing = small.clone();
    trailing.push(0);
    seeds.push(("after-footer".into(), snap_seed(0, &trailing)));
    Ok(seeds)
}

/// Every target's seeds, by target name.
pub fn all() -> std::io::Result<Vec<(&'static str, Vec<Seed>)>> {
    Ok(vec![
        ("frame", frame()),
        ("resp", resp()),
        ("wal", wal()),
        ("snapshot", snapshot()?),
    ])
}

/// Writes every seed as `<corpus>/<target>/seed-<name>`.
pub fn write_all(corpus: &Path) -> std::io::Result<usize> {
    let mut n = 0;
    for (target, seeds) in all()? {
        let dir = corpus.join(target);
        std::fs::create_dir_all(&dir)?;
        for (name, bytes) in seeds {
            std::fs::write(dir.join(format!("seed-{name}")), bytes)?;
            n += 1;
        }
    }
    Ok(n)
}
