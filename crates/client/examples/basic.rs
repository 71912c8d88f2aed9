//! Puts, gets and deletes a key on a ringkv server.
//!
//! ```text
//! cargo run -p ringkv-client --example basic [HOST:PORT]
//! ```
//! The address defaults to 127.0.0.1:7379; set RINGKV_PASSWORD if the server needs one.

use ringkv_client::{Client, ClientConfig};

#[tokio::main(flavor = "current_thread")]
async fn main() {
    if let Err(e) = run().await {
        eprintln!("error: {e}");
        std::process::exit(1);
    }
}

async fn run() -> Result<(), ringkv_client::ClientError> {
    let addr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:7379".to_string());
    let config = ClientConfig {
        password: std::env::var("RINGKV_PASSWORD").ok(),
        client_name: Some("basic-example".into()),
        ..ClientConfig::default()
    };
    let client = Client::connect(addr.as_str(), config).await?;
    if let Some(info) = client.server_info() {
        println!(
            "connected to ringkv {} (node {}, protocol v{})",
            info.server_version, info.node_id, info.protocol_version
        );
    }

    let ctx = client.put("example:greeting", "hello, ringkv").await?;
    println!("put example:greeting (context {} bytes)", ctx.len());

    match client.get("example:greeting").await? {
        Some(v) => {
            for (i, value) in v.values.iter().enumerate() {
                println!("get -> [{i}] {}", String::from_utf8_lossy(value));
            }
        }
        None => println!("get -> (missing)"),
    }

    let existed = client.delete("example:greeting").await?;
    println!("delete -> existed: {existed}");
    println!(
        "get after delete -> {:?}",
        client
            .get("example:greeting")
            .await?
            .and_then(|v| v.value().cloned())
    );
    Ok(())
}
