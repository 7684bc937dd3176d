//! The gRPC contracts between Conduit's proxies and its control plane, generated from
//! `proto/`: Destination (endpoint discovery), Identity (certificates), InboundPolicy (who may connect) and Tap (live request
//! events). Only
//! generated code lives here; behaviour belongs to the proxy and the controller.

/// Endpoint discovery: `conduit.destination.v1`.
pub mod destination {
    tonic::include_proto!("conduit.destination.v1");
}

/// Workload certificates: `conduit.identity.v1`.
pub mod identity {
    tonic::include_proto!("conduit.identity.v1");
}

/// Who may connect to a pod: `conduit.policy.v1`.
pub mod policy {
    tonic::include_proto!("conduit.policy.v1");
}

/// Live request events: `conduit.tap.v1`.
pub mod tap {
    tonic::include_proto!("conduit.tap.v1");
}
