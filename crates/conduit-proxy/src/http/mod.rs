//! The HTTP half of the proxy: serving detected HTTP/1 and HTTP/2 connections with hyper
//! ([`serve`], after [`head`] checked the first HTTP/1 head), and the Tower layers each
//! request passes through on its way upstream, outermost first: [`record`] (golden
//! metrics, tap), [`respond`] (the proxy's errors as responses), [`guard`] (header-list
//! limit, inbound authorization), [`forward`] (hop-by-hop [`headers`], upgrades) along a
//! [`route`] to an endpoint's [`pool`] of upstream connections, spoken to over [`h1`]
//! (HTTP/1, in the request's own task) or [`h2`] (HTTP/2, one shared connection; both
//! clients of our own, hyper's only for protocol switches). [`body`] watches response
//! bodies end. Knows nothing of how a connection was accepted or detected.

pub mod backends;
pub mod body;
pub mod carried;
pub mod forward;
pub mod guard;
pub mod h1;
pub mod h2;
pub mod head;
pub mod headers;
pub mod pool;
pub mod record;
pub mod respond;
pub mod retry;
pub mod route;
pub mod routes;
pub mod serve;
pub mod timeout;
