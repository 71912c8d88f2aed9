//! kvsh's `cluster nodes|info|join|leave|forget|cancel`: the server's CLUSTER subcommands,
//! printed for people (a table of nodes, INFO lines); `join`, `leave` and `forget` wait until
//! the partitions have moved and the layout change is committed, with a progress bar.

use std::time::{Duration, Instant};

use ringkv_client::{Client, ClientError, Value};

/// How long `cluster join` waits for the joined node to appear in CLUSTER NODES.
const JOIN_WAIT: Duration = Duration::from_secs(10);
/// How often `cluster join` looks at CLUSTER NODES while waiting.
const JOIN_POLL: Duration = Duration::from_millis(100);

/// How long `cluster join/leave/forget` waits without any progress before it stops waiting
/// (the move goes on in the cluster; `cluster info` shows it, `cluster cancel` stops it).
const MOVE_STALL_WAIT: Duration = Duration::from_secs(120);
/// How often the move's progress is polled.
const MOVE_POLL: Duration = Duration::from_millis(250);

/// Subcommands kvsh prints itself (others, e.g. `cluster myid`, go to the server as typed).
pub const SUBCOMMANDS: &[&str] = &["nodes", "info", "join", "leave", "forget", "cancel"];

/// Runs `cluster SUB ...` (`words` without the leading `cluster`) if kvsh handles `SUB`;
/// `None` otherwise. The text is ready to print.
pub async fn run(
    client: &Client,
    words: &[Vec<u8>],
    raw: bool,
) -> Option<Result<String, ClientError>> {
    let sub = words.first()?.to_ascii_lowercase();
    let args = &words[1..];
    Some(match (sub.as_slice(), args) {
        (b"nodes", []) => nodes_text(client).await.map(|t| render_nodes(&t, raw)),
        (b"info", []) => bulk_text(client, &["CLUSTER", "INFO"])
            .await
            .map(|t| t.replace('\r', "")),
        (b"join", [addr]) => join(client, addr).await,
        (b"leave", []) => leave(client, b"LEAVE", None).await,
        (b"leave", [id]) => leave(client, b"LEAVE", Some(id)).await,
        (b"forget", [id]) => leave(client, b"FORGET", Some(id)).await,
        (b"cancel", []) => simple(client, &[b"CLUSTER".as_slice(), b"CANCEL"]).await,
        (b"cancel", [id]) => simple(client, &[b"CLUSTER".as_slice(), b"CANCEL", id]).await,
        (b"nodes", _)
        | (b"info", _)
        | (b"join", _)
        | (b"leave", _)
        | (b"forget", _)
        | (b"cancel", _) => Err(usage()),
        _ => return None,
    })
}

fn usage() -> ClientError {
    ClientError::Server(
        "ERR usage: cluster nodes | cluster info | cluster join HOST:PORT | cluster leave [ID] \
         | cluster forget ID | cluster cancel [ID]"
            .into(),
    )
}

async fn bulk_text(client: &Client, args: &[&str]) -> Result<String, ClientError> {
    match client.command(args).await? {
        Value::Bulk(b) => Ok(String::from_utf8_lossy(&b).into_owned()),
        other => Err(ClientError::UnexpectedReply {
            command: "CLUSTER",
            got: format!("{other:?}"),
        }),
    }
}

async fn nodes_text(client: &Client) -> Result<String, ClientError> {
    bulk_text(client, &["CLUSTER", "NODES"]).await
}

async fn simple(client: &Client, args: &[&[u8]]) -> Result<String, ClientError> {
    match client.command(args).await? {
        Value::Simple(s) => Ok(format!("{}\n", String::from_utf8_lossy(&s))),
        other => Err(ClientError::UnexpectedReply {
            command: "CLUSTER",
            got: format!("{other:?}"),
        }),
    }
}

/// One CLUSTER NODES line: id, address, zone, state, liveness, partitions[, myself].
fn fields(line: &str) -> Vec<&str> {
    line.split_ascii_whitespace().collect()
}

/// CLUSTER NODES as an aligned table with a header (raw: the server's lines as they are).
fn render_nodes(text: &str, raw: bool) -> String {
    if raw {
        return text.to_owned();
    }
    let header = [
        "ID",
        "ADDRESS",
        "ZONE",
        "STATE",
        "LIVENESS",
        "PARTITIONS",
        "",
    ];
    let mut rows: Vec<Vec<&str>> = vec![header.to_vec()];
    rows.extend(text.lines().filter(|l| !l.trim().is_empty()).map(fields));
    let columns = rows.iter().map(Vec::len).max().unwrap_or(0);
    let widths: Vec<usize> = (0..columns)
        .map(|c| {
            rows.iter()
                .filter_map(|r| r.get(c))
                .map(|f| f.len())
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut out = String::new();
    for row in rows {
        let mut line = String::new();
        for (c, f) in row.iter().enumerate() {
            line.push_str(&format!("{f:<w$}  ", w = widths[c]));
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

/// CLUSTER JOIN, then waits (at most [`JOIN_WAIT`]) until the node at `addr`, or a node this
/// one did not know before, is listed by CLUSTER NODES.
async fn join(client: &Client, addr: &[u8]) -> Result<String, ClientError> {
    let addr = String::from_utf8_lossy(addr).into_owned();
    let before: Vec<String> = nodes_text(client)
        .await?
        .lines()
        .filter_map(|l| fields(l).first().map(|s| s.to_string()))
        .collect();
    simple(client, &[b"CLUSTER".as_slice(), b"JOIN", addr.as_bytes()]).await?;
    eprintln!(
        "kvsh: asked the node to join {addr}; waiting up to {}s for it to appear in CLUSTER NODES",
        JOIN_WAIT.as_secs()
    );
    let started = Instant::now();
    loop {
        let text = nodes_text(client).await?;
        let found = text.lines().map(fields).find(|f| {
            f.len() >= 5 && (f[1] == addr || !before.iter().any(|id| id.as_str() == f[0]))
        });
        if let Some(f) = found {
            let line = format!(
                "joined: node {} at {} is {} and {} ({:.1}s)\n",
                f[0],
                f[1],
                f[3],
                f[4],
                started.elapsed().as_secs_f64()
            );
            let me = myself(&text).unwrap_or_default();
            let moved = wait_move(client, &me, "active", Progress::Copies).await?;
            return Ok(format!("{line}{moved}"));
        }
        if started.elapsed() >= JOIN_WAIT {
            return Err(ClientError::Server(format!(
                "ERR {addr} did not appear in CLUSTER NODES within {}s: is it running, with the \
                 same --cluster-secret, --n, --partitions and --conflicts? (its log says why)",
                JOIN_WAIT.as_secs()
            )));
        }
        tokio::time::sleep(JOIN_POLL).await;
    }
}

/// The id of the node kvsh is connected to, from CLUSTER NODES.
fn myself(nodes: &str) -> Option<String> {
    nodes
        .lines()
        .map(fields)
        .find(|f| f.last() == Some(&"myself"))
        .and_then(|f| f.first().map(|s| s.to_string()))
}

/// CLUSTER LEAVE or FORGET, then waits until the node is removed.
async fn leave(client: &Client, sub: &[u8], id: Option<&Vec<u8>>) -> Result<String, ClientError> {
    let mut args: Vec<&[u8]> = vec![b"CLUSTER", sub];
    if let Some(id) = id {
        args.push(id);
    }
    simple(client, &args).await?;
    let target = match id {
        Some(id) => String::from_utf8_lossy(id).into_owned(),
        None => myself(&nodes_text(client).await?).unwrap_or_default(),
    };
    let moved = wait_move(client, &target, "removed", Progress::Moves).await?;
    Ok(format!("OK\n{moved}"))
}

/// Which progress a wait shows: this node's own copies (a join: it is the receiver), or the
/// sum over every receiver that the committing node keeps (a leave).
#[derive(Clone, Copy)]
enum Progress {
    Copies,
    Moves,
}

/// The numbers of CLUSTER INFO lines `prefix_partitions`, `_partitions_done`, `_bytes`,
/// `_rate_bps`.
fn progress_of(info: &str, prefix: &str) -> (u64, u64, u64, u64) {
    let get = |name: &str| -> u64 {
        info.lines()
            .find_map(|l| l.trim().strip_prefix(&format!("{prefix}_{name}:")))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0)
    };
    (
        get("partitions"),
        get("partitions_done"),
        get("bytes"),
        get("rate_bps"),
    )
}

/// Waits until node `id` shows `state` in CLUSTER NODES, drawing a progress bar of the
/// partitions copied meanwhile. Gives up after [`MOVE_STALL_WAIT`] without progress.
async fn wait_move(
    client: &Client,
    id: &str,
    state: &str,
    which: Progress,
) -> Result<String, ClientError> {
    let prefix = match which {
        Progress::Copies => "cluster_stream",
        Progress::Moves => "cluster_moves",
    };
    let bar = indicatif::ProgressBar::new(0);
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "{spinner} moving partitions [{bar:30}] {pos}/{len} {msg}",
        )
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    let started = Instant::now();
    let (mut last, mut last_change) = ((0, 0, 0, 0), Instant::now());
    loop {
        let nodes = nodes_text(client).await?;
        let now = nodes
            .lines()
            .map(fields)
            .find(|f| f.first() == Some(&id))
            .and_then(|f| f.get(3).map(|s| s.to_string()));
        if now.as_deref() == Some(state) {
            bar.finish_and_clear();
            return Ok(format!(
                "node {id} is {state}: the layout change is committed ({:.1}s)\n",
                started.elapsed().as_secs_f64()
            ));
        }
        let info = bulk_text(client, &["CLUSTER", "INFO"]).await?;
        let p = progress_of(&info, prefix);
        bar.set_length(p.0);
        bar.set_position(p.1);
        bar.set_message(format!(
            "{:.1} MB copied, {:.1} MB/s",
            p.2 as f64 / 1e6,
            p.3 as f64 / 1e6
        ));
        if p != last {
            (last, last_change) = (p, Instant::now());
        }
        if last_change.elapsed() >= MOVE_STALL_WAIT {
            bar.abandon();
            return Err(ClientError::Server(format!(
                "ERR node {id} is still {} after {}s without progress; the move goes on in \
                 the cluster (see `cluster info`), `cluster cancel {id}` stops it",
                now.unwrap_or_else(|| "unknown".into()),
                MOVE_STALL_WAIT.as_secs()
            )));
        }
        tokio::time::sleep(MOVE_POLL).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nodes_table_is_aligned_with_a_header() {
        let text = "00000000000000aa 127.0.0.1:7001 - active up 1024 myself\n\
                    00000000000000bb 127.0.0.1:17002 - active down 1024\n";
        let t = render_nodes(text, false);
        let lines: Vec<&str> = t.lines().collect();
        assert_eq!(lines.len(), 3, "{t}");
        assert!(lines[0].starts_with("ID "), "{t}");
        let col = lines[0].find("ADDRESS").unwrap();
        assert_eq!(lines[1].find("127.0.0.1:7001"), Some(col), "{t}");
        assert_eq!(lines[2].find("127.0.0.1:17002"), Some(col), "{t}");
        assert!(lines[1].ends_with("myself"), "{t}");
        assert_eq!(render_nodes(text, true), text);
    }
}
