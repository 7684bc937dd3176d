//! The second stage: deciding a connection's protocol. A port configured opaque
//! (`CONDUIT_PROXY_OPAQUE_PORTS`, or a Server's `proxyProtocol: opaque` inbound) or learned
//! server-speaks-first is decided without reading; otherwise detection reads the first
//! bytes ([`crate::transport::detect`]) until they decide, the client stalls, or the
//! header limit is reached, or, outbound, discovery says the destination's server speaks
//! first (a proxy learned it and the controller handed it on; the port is then learned
//! here too). Every decision is counted in `protocol_detect_total`.

use super::{server_first::ServerFirstPorts, Accepted, Decided, Detected, Shared};
use crate::{
    config::Config,
    peer::{Direction, PeerTls},
    telemetry::metrics::{DetectLabels, Metrics, PortLabels},
    transport::detect::{self, Detection},
};
use bytes::BytesMut;
use std::{future::Future, io, sync::Arc, time::Duration};
use tokio::io::AsyncRead;
use tracing::debug;

/// Decides the protocol of one side's connections.
pub struct DetectProtocol {
    direction: Direction,
    config: Arc<Config>,
    metrics: Arc<Metrics>,
    server_first: Arc<ServerFirstPorts>,
}

impl DetectProtocol {
    /// Detection for `direction`, skipping it on the ports in `server_first`.
    pub fn new(
        direction: Direction,
        shared: &Shared,
        server_first: Arc<ServerFirstPorts>,
    ) -> DetectProtocol {
        DetectProtocol {
            direction,
            config: shared.config.clone(),
            metrics: shared.metrics.clone(),
            server_first,
        }
    }

    /// The stage: decides what `io`, accepted as `accepted`, speaks. `server_opaque`: the
    /// port's Server says it is opaque.
    pub async fn detect<I: AsyncRead + Unpin>(
        &self,
        accepted: Accepted,
        io: I,
        server_opaque: bool,
    ) -> io::Result<Detected<I>> {
        self.detect_hinted(accepted, io, server_opaque, std::future::pending())
            .await
    }

    /// [`detect`](Self::detect), cut short when `server_first` resolves: discovery says
    /// the destination's server speaks first.
    pub async fn detect_hinted<I: AsyncRead + Unpin>(
        &self,
        accepted: Accepted,
        mut io: I,
        server_opaque: bool,
        server_first: impl Future<Output = ()>,
    ) -> io::Result<Detected<I>> {
        let mut read = BytesMut::new();
        let port = accepted.orig_dst.port();
        let decided = self
            .decide_hinted(&mut io, &mut read, port, server_opaque, server_first)
            .await?;
        Ok(Detected {
            accepted,
            io,
            read,
            decided,
            peer: PeerTls::None,
        })
    }

    /// Decides what `io`, a connection to `port`, speaks; the bytes read are appended to
    /// `buf`. Also used inside mesh TLS, once it is terminated.
    pub async fn decide<I: AsyncRead + Unpin>(
        &self,
        io: &mut I,
        buf: &mut BytesMut,
        port: u16,
        server_opaque: bool,
    ) -> io::Result<Decided> {
        self.decide_hinted(io, buf, port, server_opaque, std::future::pending())
            .await
    }

    async fn decide_hinted<I: AsyncRead + Unpin>(
        &self,
        io: &mut I,
        buf: &mut BytesMut,
        port: u16,
        server_opaque: bool,
        server_first: impl Future<Output = ()>,
    ) -> io::Result<Decided> {
        if self.config.opaque_ports.contains(port) {
            return Ok(Decided::OpaquePort);
        }
        if self.server_first.contains(port) {
            return Ok(Decided::ServerFirstPort);
        }
        if server_opaque {
            return Ok(Decided::OpaquePort);
        }
        let limit = self.config.max_header_bytes;
        // Detection reads into `buf` (cancel-safe: what it read stays there), so the hint
        // may cut it short at any point.
        let detected = tokio::select! {
            biased;
            detected = detect::detect(io, buf, self.config.detect_timeout, limit) => detected?,
            () = server_first => {
                if self.server_first.learn(port) {
                    let labels = PortLabels { direction: self.direction, port };
                    self.metrics.server_first_ports.get_or_create(&labels).set(1);
                }
                return Ok(Decided::ServerFirstPort);
            }
        };
        Ok(match detected {
            Detection::Detected(p) => Decided::Bytes(p),
            Detection::TimedOutSilent => Decided::Silence,
            // Only a known method makes a stalled line an HTTP client worth a 408; other
            // protocols that merely look like a request line are passed through.
            Detection::TimedOutHttp1 if starts_with_known_method(buf) => {
                Decided::StalledRequestLine
            }
            Detection::TimedOutHttp1 | Detection::TimedOutPartial => Decided::Undecided,
            Detection::Closed => Decided::ClientClosed,
        })
    }

    /// Reads for at most `wait` whether the client starts with `Bytes(Tls)`; `decided`
    /// otherwise (with what was read kept in `buf`).
    pub async fn tls_within<I: AsyncRead + Unpin>(
        &self,
        io: &mut I,
        buf: &mut BytesMut,
        wait: Duration,
        decided: Decided,
    ) -> Decided {
        let limit = self.config.max_header_bytes;
        match detect::detect(io, buf, wait, limit).await {
            Ok(Detection::Detected(p @ detect::Protocol::Tls)) => Decided::Bytes(p),
            _ => decided,
        }
    }

    /// Counts the decision (once a connection's final protocol is known).
    pub fn report<I>(&self, detected: &Detected<I>) {
        let (protocol, decided_by) = detected.decided.protocol();
        self.metrics
            .detect
            .get_or_create(&DetectLabels {
                direction: self.direction,
                protocol,
                decided_by,
            })
            .inc();
        debug!(orig_dst = %detected.accepted.orig_dst, protocol = protocol.as_str(), decided_by, client_id = detected.peer.identity(), "accepted");
    }
}

fn starts_with_known_method(buf: &[u8]) -> bool {
    const METHODS: [&[u8]; 9] = [
        b"GET ",
        b"HEAD ",
        b"POST ",
        b"PUT ",
        b"DELETE ",
        b"OPTIONS ",
        b"PATCH ",
        b"CONNECT ",
        b"TRACE ",
    ];
    METHODS.iter().any(|m| buf.starts_with(m))
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::{config::PodIdentity, telemetry::tap::Taps, transport::detect::Protocol};
    use tokio::io::AsyncWriteExt;

    /// What a side shares, from `config`.
    pub(crate) fn shared(config: Config) -> Shared {
        Shared {
            config: Arc::new(config),
            metrics: Arc::new(Metrics::new(&PodIdentity::default())),
            taps: Taps::new(&PodIdentity::default()),
            tls: None,
            control: None,
            discovery: None,
            profiles: None,
        }
    }

    pub(crate) fn accepted(port: u16) -> Accepted {
        Accepted {
            client: "198.18.0.1:40000".parse().unwrap(),
            orig_dst: format!("198.18.0.2:{port}").parse().unwrap(),
            at: tokio::time::Instant::now(),
        }
    }

    /// What detection decides for a client that sends `sent` and then waits (or closes,
    /// with `close`), with `learned` known to be server-speaks-first.
    async fn decided(
        config: Config,
        learned: &[u16],
        sent: &[u8],
        close: bool,
    ) -> (Decided, Vec<u8>) {
        let shared = shared(config);
        let server_first = Arc::new(ServerFirstPorts::default());
        for &port in learned {
            server_first.learn(port);
        }
        let detect = DetectProtocol::new(Direction::Inbound, &shared, server_first);
        let (mut client, server) = tokio::io::duplex(64 * 1024);
        client.write_all(sent).await.unwrap();
        let client = (!close).then_some(client);
        let d = detect.detect(accepted(8080), server, false).await.unwrap();
        detect.report(&d);
        drop(client);
        (d.decided, d.read.to_vec())
    }

    #[tokio::test(start_paused = true)]
    async fn decides_from_ports_bytes_silence_and_stalls() {
        let none = &[];
        let (d, read) = decided(Config::default(), none, b"GET / HTTP/1.1\r\n", false).await;
        assert_eq!(d, Decided::Bytes(Protocol::Http1));
        assert_eq!(
            read, b"GET / HTTP/1.1\r\n",
            "what was read is kept for replay"
        );
        let (d, _) = decided(
            Config::default(),
            none,
            b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
            false,
        )
        .await;
        assert_eq!(d, Decided::Bytes(Protocol::Http2));
        let (d, _) = decided(Config::default(), none, b"*1\r\n$4\r\nPING\r\n", false).await;
        assert_eq!(d, Decided::Bytes(Protocol::Opaque));
        let (d, _) = decided(Config::default(), none, b"", false).await;
        assert_eq!(
            d,
            Decided::Silence,
            "a silent client may be waiting for its server"
        );
        let (d, _) = decided(Config::default(), none, b"GET /slow", false).await;
        assert_eq!(d, Decided::StalledRequestLine);
        let (d, _) = decided(Config::default(), none, b"HELO x", false).await;
        assert_eq!(
            d,
            Decided::Undecided,
            "an unknown verb that stalls passes through"
        );
        let (d, _) = decided(Config::default(), none, b"GE", true).await;
        assert_eq!(d, Decided::ClientClosed);

        let opaque: Config = Config {
            opaque_ports: "8080".parse().unwrap(),
            ..Config::default()
        };
        let (d, read) = decided(opaque, none, b"GET / HTTP/1.1\r\n", false).await;
        assert_eq!(d, Decided::OpaquePort);
        assert!(read.is_empty(), "an opaque port is not read");
        let (d, _) = decided(Config::default(), &[8080], b"", false).await;
        assert_eq!(d, Decided::ServerFirstPort);
        assert!(Decided::StalledRequestLine.is_http() && !Decided::Silence.is_http());
    }

    #[tokio::test(start_paused = true)]
    async fn a_server_first_hint_cuts_detection_short_and_teaches_the_port() {
        let shared = shared(Config::default());
        let server_first = Arc::new(ServerFirstPorts::default());
        let detect = DetectProtocol::new(Direction::Outbound, &shared, server_first.clone());
        // A MariaDB client: silent, waiting for its server's greeting.
        let (_client, server) = tokio::io::duplex(1024);
        let started = tokio::time::Instant::now();
        let hint = tokio::time::sleep(Duration::from_millis(20));
        let d = detect
            .detect_hinted(accepted(13306), server, false, hint)
            .await
            .unwrap();
        assert_eq!(d.decided, Decided::ServerFirstPort);
        assert_eq!(
            started.elapsed(),
            Duration::from_millis(20),
            "not the detection timeout"
        );
        assert!(server_first.contains(13306));
        let metrics = shared.metrics.encode();
        assert!(
            metrics.contains(r#"server_speaks_first_port{direction="outbound",port="13306"} 1"#),
            "learned ports show as learned: {metrics}"
        );
        // Without a hint, the same client waits out detection.
        let (_client, server) = tokio::io::duplex(1024);
        let detect = DetectProtocol::new(Direction::Outbound, &shared, Arc::default());
        let d = detect.detect(accepted(13306), server, false).await.unwrap();
        assert_eq!(d.decided, Decided::Silence);
        assert_eq!(
            started.elapsed(),
            Duration::from_millis(20) + Config::default().detect_timeout
        );
    }
}
