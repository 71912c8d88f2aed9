//! The command table lives in the codec crate (`ringkv_proto::commands`), shared with kvsh.

pub use ringkv_proto::commands::{lookup, lookup_index, Spec, TABLE};
