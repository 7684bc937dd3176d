//! Sockets and bytes, below any protocol the proxy serves: where a redirected connection
//! was going, what its first bytes say, mesh TLS and the sessions it resumes, opening
//! upstream connections, counting and replaying bytes, and splicing opaque TCP. Knows nothing of HTTP semantics, policy
//! or the control plane.

pub mod connect;
pub mod detect;
pub mod io;
pub mod orig_dst;
pub mod resumption;
pub mod splice;
pub mod tls;
