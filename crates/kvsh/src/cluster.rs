//! kvsh's `cluster nodes|info|join|leave`: the server's CLUSTER subcommands, printed for
//! people (a table of nodes, INFO lines) and, for `join`, waiting until the node shows up.

use std::time::{Duration, Instant};

use ringkv_client::{Client, ClientError, Value};

/// How long `cluster join` waits for the joined node to appear in CLUSTER NODES.
const JOIN_WAIT: Duration = Duration::from_secs(10);
/// How often `cluster join` looks at CLUSTER NODES while waiting.
const JOIN_POLL: Duration = Duration::from_millis(100);

/// Subcommands kvsh prints itself (others, e.g. `cluster myid`, go to the server as typed).
pub const SUBCOMMANDS: &[&str] = &["nodes", "info", "join", "leave"];

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
        (b"leave", []) => simple(client, &[b"CLUSTER".as_slice(), b"LEAVE"]).await,
        (b"leave", [id]) => simple(client, &[b"CLUSTER".as_slice(), b"LEAVE", id]).await,
        (b"nodes", _) | (b"info", _) | (b"join", _) | (b"leave", _) => Err(usage()),
        _ => return None,
    })
}

fn usage() -> ClientError {
    ClientError::Server(
        "ERR usage: cluster nodes | cluster info | cluster join HOST:PORT | cluster leave [ID]"
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
            return Ok(format!(
                "joined: node {} at {} is {} and {} ({:.1}s)\n",
                f[0],
                f[1],
                f[3],
                f[4],
                started.elapsed().as_secs_f64()
            ));
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
