//! Review of issue 9 (branch `review`): a causal context is client input. One carrying this
//! node's actor with counter MAX_COUNTER is accepted by the decoder; the dot minted above it
//! (MAX_COUNTER + 1) is refused by the same decoder at recovery, so a single PUT from any client
//! makes the node refuse to restart ("a record's entry does not decode").

mod common;

use common::*;
use ringkv::store::dvv::{Dot, MAX_COUNTER};
use ringkv::store::VersionVector;
use ringkv_client::{Bytes, Client, ClientConfig, PutOptions};

#[tokio::test(flavor = "current_thread")]
async fn a_forged_context_does_not_stop_the_node_from_restarting() {
    let data = tempfile::tempdir().unwrap();
    let flags = ["--threads", "1", "--shards", "1"];
    {
        let server = Server::start_in(data.path(), &flags);
        let client = Client::connect(server.addr, ClientConfig::default())
            .await
            .expect("connect");
        let me = client.server_info().expect("handshake").node_id;
        client.put("k", "v").await.unwrap();
        let mut forged = VersionVector::new();
        forged.add_dot(Dot {
            actor: me,
            counter: MAX_COUNTER,
        });
        let opts = PutOptions {
            context: Some(Bytes::from(forged.encoded())),
            ttl: None,
        };
        // Accepted or refused with an error: either is fine, as long as the node restarts.
        let _ = client.put_with("k", "x", opts).await;
        client.put("other", "y").await.unwrap();
        assert!(server.terminate().success());
    }
    let server = Server::try_start_in(data.path(), &flags)
        .unwrap_or_else(|log| panic!("the node does not restart after a forged context:\n{log}"));
    let client = Client::connect(server.addr, ClientConfig::default())
        .await
        .expect("connect");
    assert!(client.get("other").await.unwrap().is_some());
}
