//! The mesh on one host: Kubernetes Deployments and Services run as pods that are network
//! namespaces on a private bridge, each container a host process, each Service a virtual
//! IP. A meshed pod (one that carries the sidecar `conduit inject` adds) runs the real
//! `conduit-proxy` and its real iptables init, exactly as on Kubernetes. For trying the
//! mesh and for testing it for real; clusters use Kubernetes.
//!
//! `up` ([`client`]) checks manifests and hands them to the supervisor ([`daemon`]), a
//! detached process that owns the pods; both meet in the run directory ([`layout`]),
//! where the supervisor writes what it observes ([`state`], whose contract is
//! `conduit_api::local_state`). In the supervisor, one module per job: the reconcile
//! loop (`supervisor`), Services' endpoints and rules (`services`), one pod's life
//! (`pod`), a container's processes (`process`), the runtime's identity material
//! (`identity`), the control plane (`control_plane`) and the Prometheus it may run
//! ([`prometheus`]). Pods end their whole process
//! tree when they stop, as on a kubelet: each container's run is a process group, and a
//! removed pod's namespace goes with whatever still runs inside.

pub mod client;
mod control_plane;
pub mod daemon;
mod identity;
pub mod layout;
pub mod net;
mod pod;
pub mod probe;
mod process;
pub mod prometheus;
mod services;
pub mod spec;
pub mod state;
mod supervisor;
