//! The TCP ports the mesh's parts agree on: where a meshed pod's proxy listens (the
//! redirect rules send traffic there, the injector declares and probes them, the
//! controller scrapes and taps them) and where the controller serves (the Services of
//! `conduit install` point there, the proxies and the CLI connect there).

/// The proxy's inbound listener: every inbound TCP connection of a meshed pod is
/// redirected here.
pub const PROXY_INBOUND: u16 = 4143;
/// The proxy's outbound listener: every outbound TCP connection of a meshed pod (but the
/// proxy's own) is redirected here.
pub const PROXY_OUTBOUND: u16 = 4140;
/// The proxy's admin server: metrics, probes and its identity.
pub const PROXY_ADMIN: u16 = 4191;
/// The proxy's tap server: gRPC `conduit.tap.v1.Tap`, live request events.
pub const PROXY_TAP: u16 = 4190;

/// The controller's gRPC APIs for proxies: Destination, Identity and InboundPolicy.
pub const CONTROLLER_GRPC: u16 = 8086;
/// The controller's HTTP JSON API and its probes.
pub const CONTROLLER_API: u16 = 8085;
/// The controller's proxy injector: HTTPS, AdmissionReview v1.
pub const CONTROLLER_WEBHOOK: u16 = 8443;
