//! Conduit's Kubernetes model: reading manifests (multi-document YAML, typed with the
//! official `k8s-openapi` types), the sidecar injection that meshes a workload, the
//! control plane's own manifests (`install`), the policy resources (Servers,
//! AuthorizationPolicies) resolved into pods' policies, ServiceProfiles, and Gateway API
//! HTTPRoutes.
//! Knows nothing about how workloads are run: the local runtime and a real cluster both
//! consume what this crate produces.

pub mod httproute;
pub mod inject;
pub mod install;
pub mod manifest;
pub mod policy;
pub mod profile;
pub mod webhook;
