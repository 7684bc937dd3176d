//! What the supervisor observes, written as JSON to the run directory after every change
//! and read by `status`, by `up` while it waits, and by the control plane's discovery.
//! The file's contract is `conduit_api::local_state`; this module names its state with
//! the policy, profile and route types this runtime carries in it, so the rest of the crate (and
//! `conduit`) can say `State`.

use conduit_api::local_state;
use conduit_k8s::{httproute::HttpRoute, policy::Resources, profile::ServiceProfile};

pub use local_state::{
    read_json, write_json, ContainerState, EndpointState, PodState, ServicePortState, ServiceState,
};

/// The whole observed state of one runtime.
pub type State = local_state::State<Resources, ServiceProfile, HttpRoute>;
