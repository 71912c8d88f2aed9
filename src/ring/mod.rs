//! Placement and membership logic of the cluster, without sockets: the ring of partitions and
//! their preference lists, the layout (members and their states), the failure detector, and
//! quorum counting. Pure, so that it is tested alone and runs the same in a simulation.

pub mod layout;

/// A node's id: the actor of the dots it mints (`store::NodeId` is the same type).
pub type NodeId = u64;
