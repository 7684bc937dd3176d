//! Readiness probes, run from the node as a kubelet runs them: `httpGet` passes on a
//! 2xx or 3xx answer, `tcpSocket` when a connection opens. For a meshed pod the probe
//! goes through the pod's inbound proxy, as on Kubernetes.

use crate::spec::ProbeAction;
use http_body_util::Empty;
use hyper_util::rt::TokioIo;
use std::{net::Ipv4Addr, time::Duration};
use tokio::net::TcpStream;

/// Runs one probe against the pod at `ip`; the error says why it failed.
pub async fn check(ip: Ipv4Addr, action: &ProbeAction, timeout: Duration) -> Result<(), String> {
    match tokio::time::timeout(timeout, attempt(ip, action)).await {
        Ok(result) => result,
        Err(_) => Err(format!("no answer within {}s", timeout.as_secs_f32())),
    }
}

async fn attempt(ip: Ipv4Addr, action: &ProbeAction) -> Result<(), String> {
    let port = match action {
        ProbeAction::HttpGet { port, .. } | ProbeAction::TcpSocket { port } => *port,
    };
    let tcp = TcpStream::connect((ip, port))
        .await
        .map_err(|e| format!("connecting to {ip}:{port}: {e}"))?;
    let ProbeAction::HttpGet { path, .. } = action else {
        return Ok(());
    };
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
        .await
        .map_err(|e| format!("HTTP to {ip}:{port}: {e}"))?;
    tokio::spawn(conn);
    let req = http::Request::get(path.as_str())
        .header(http::header::HOST, format!("{ip}:{port}"))
        .header(http::header::USER_AGENT, "conduit-local-probe")
        .body(Empty::<bytes::Bytes>::new())
        .map_err(|e| format!("bad probe path {path:?}: {e}"))?;
    let rsp = sender
        .send_request(req)
        .await
        .map_err(|e| format!("GET {path} on {ip}:{port}: {e}"))?;
    let status = rsp.status();
    if status.is_success() || status.is_redirection() {
        Ok(())
    } else {
        Err(format!("GET {path} on {ip}:{port} answered {status}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    async fn server(status_line: &'static str) -> u16 {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = l.local_addr().unwrap().port();
        tokio::spawn(async move {
            while let Ok((mut s, _)) = l.accept().await {
                let mut buf = [0u8; 1024];
                let _ = s.read(&mut buf).await;
                let _ = s
                    .write_all(format!("{status_line}\r\ncontent-length: 0\r\n\r\n").as_bytes())
                    .await;
            }
        });
        port
    }

    #[tokio::test]
    async fn http_probes_pass_on_2xx_and_fail_otherwise() {
        let ok = server("HTTP/1.1 200 OK").await;
        let bad = server("HTTP/1.1 503 Service Unavailable").await;
        let lo = Ipv4Addr::LOCALHOST;
        let t = Duration::from_secs(2);
        check(
            lo,
            &ProbeAction::HttpGet {
                port: ok,
                path: "/healthz".into(),
            },
            t,
        )
        .await
        .unwrap();
        let err = check(
            lo,
            &ProbeAction::HttpGet {
                port: bad,
                path: "/healthz".into(),
            },
            t,
        )
        .await
        .unwrap_err();
        assert!(err.contains("503"), "{err}");
        check(lo, &ProbeAction::TcpSocket { port: ok }, t)
            .await
            .unwrap();
        let closed = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let err = check(lo, &ProbeAction::TcpSocket { port: closed }, t)
            .await
            .unwrap_err();
        assert!(err.contains("connecting"), "{err}");
    }
}
