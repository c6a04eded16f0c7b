//! mesh's wire types: the objects the control plane stores and replicates, and the gRPC services
//! between `meshctl`, the managers and the agents. Generated from `mesh/v1/*.proto`.

#![forbid(unsafe_code)]

pub mod v1 {
    #![allow(clippy::all, clippy::pedantic)]
    tonic::include_proto!("mesh.v1");
}

pub use v1::*;

pub mod chunks;
pub use chunks::{ListChunk, gather};

mod redact;
