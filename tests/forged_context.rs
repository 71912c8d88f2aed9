//! A causal context is client input. One claiming a write of this node it never made (here
//! counter MAX_COUNTER, whose next dot no decoder would accept), or naming more nodes than any
//! real context does, is refused with a clear error and changes nothing; the node restarts.

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
        let me = dot_actor(&server);
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
        let err = client
            .put_with("k", "x", opts)
            .await
            .expect_err("a forged context is refused");
        assert!(err.to_string().contains("invalid causal context"), "{err}");
        let mut wide = VersionVector::new();
        for actor in 1..=65u64 {
            wide.add_dot(Dot {
                actor: actor << 40,
                counter: 1,
            });
        }
        let err = client
            .delete_with("k", wide.encoded())
            .await
            .expect_err("a context naming 65 nodes is refused");
        assert!(err.to_string().contains("more than 64"), "{err}");
        assert_eq!(
            &client.get("k").await.unwrap().expect("k").values[..],
            ["v"]
        );
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
