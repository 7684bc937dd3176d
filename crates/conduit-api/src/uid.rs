//! The user IDs the mesh's processes run as. The redirect rules tell the proxy's own
//! connections from the application's by the proxy's UID, so the injector, the redirect
//! and whatever starts the proxy must agree on it.

/// The proxy's UID: its outbound connections are never redirected back to itself.
pub const PROXY: u32 = 2102;
