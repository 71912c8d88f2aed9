//! Node ids: 64-bit, drawn with 56 random bits for a new data directory, and checked for
//! uniqueness when a node meets another (a HELLO named `ringkv-node/<id>`, protocol.md §2.3).

mod common;

use common::*;
use ringkv_client::{Client, ClientConfig};

async fn hello_as(server: &Server, name: &str) -> Result<Client, ringkv_client::ClientError> {
    let config = ClientConfig {
        client_name: Some(name.to_string()),
        ..ClientConfig::default()
    };
    let client = Client::connect(server.addr, config).await?;
    client.ping().await?;
    Ok(client)
}

#[tokio::test(flavor = "current_thread")]
async fn a_node_with_this_nodes_id_is_refused() {
    let server = Server::start(&["--threads", "1"]);
    let plain = Client::connect(server.addr, ClientConfig::default())
        .await
        .expect("connect");
    let me = plain.server_info().expect("handshake").node_id;
    assert!(
        (1..=ringkv::store::MAX_NODE_ID).contains(&me),
        "a new node's id {me:#x} has at most 56 bits"
    );

    let err = hello_as(&server, &format!("ringkv-node/{me:016x}"))
        .await
        .expect_err("a node with the same id is refused");
    assert!(err.to_string().contains("node id collision"), "{err}");

    let other = me ^ 1;
    hello_as(&server, &format!("ringkv-node/{other:016x}"))
        .await
        .expect("a node with another id is let in");
    let err = hello_as(&server, "ringkv-node/not-hex")
        .await
        .expect_err("a node name without an id is refused");
    assert!(err.to_string().contains("malformed node name"), "{err}");
    hello_as(&server, "an-ordinary-client")
        .await
        .expect("ordinary names are untouched");
}
