//! Emojivoto, Conduit's sample application: vote for your favourite emoji.
//!
//! Four programs share this library: two gRPC services (`emoji`, `voting`), an HTTP/JSON
//! front end (`web`) that calls them, and a load generator (`vote-bot`) that calls the web.
//! Voting for `:doughnut:` always fails, so a meshed install shows a success rate below 100%.
//! The library knows nothing about the mesh: the programs talk plain HTTP/1.1 and HTTP/2.

pub mod bot;
pub mod config;
pub mod emoji;
pub mod process;
pub mod voting;
pub mod web;

/// Generated protobuf messages, clients and servers for package `emojivoto.v1`.
pub mod proto {
    #![allow(missing_docs, clippy::all)]
    tonic::include_proto!("emojivoto.v1");
}
