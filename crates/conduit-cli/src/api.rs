//! Talking to the control plane's API: finds the local control plane by itself (its
//! socket in the local runtime's run directory); `--api-addr` points elsewhere, as
//! `unix:/path` or `host:port`.

use anyhow::{bail, Context as _};
use conduit_local::layout::Layout;
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;
use std::path::PathBuf;

/// Where the API is.
#[derive(Clone, Debug)]
pub enum ApiAddr {
    Unix(PathBuf),
    Tcp(String),
}

impl ApiAddr {
    /// `--api-addr` if given, else the local runtime's socket.
    pub fn find(flag: Option<&str>) -> ApiAddr {
        match flag {
            Some(a) => match a.strip_prefix("unix:") {
                Some(path) => ApiAddr::Unix(PathBuf::from(path)),
                None => ApiAddr::Tcp(a.to_string()),
            },
            None => ApiAddr::Unix(conduit_local::daemon::api_socket(&Layout::from_env())),
        }
    }
}

/// `GET path` on the API; the JSON body, or an error saying what to do.
pub fn get_json(addr: &ApiAddr, path: &str) -> anyhow::Result<serde_json::Value> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let rsp = send(addr, path).await?;
        let status = rsp.status();
        let body = rsp.into_body().collect().await?.to_bytes();
        let value: serde_json::Value = serde_json::from_slice(&body)
            .context("the control plane answered something that is not JSON")?;
        if !status.is_success() {
            bail!(
                "{}",
                value["error"]
                    .as_str()
                    .unwrap_or("the control plane refused the request")
            );
        }
        Ok(value)
    })
}

/// `GET path` on the API, handing each line of the streamed body to `line` until it
/// returns false or the stream ends.
pub fn stream_lines(
    addr: &ApiAddr,
    path: &str,
    mut line: impl FnMut(&str) -> anyhow::Result<bool>,
) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let rsp = send(addr, path).await?;
        if !rsp.status().is_success() {
            let body = rsp.into_body().collect().await?.to_bytes();
            let value: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
            bail!(
                "{}",
                value["error"]
                    .as_str()
                    .unwrap_or("the control plane refused the request")
            );
        }
        let mut body = rsp.into_body();
        let mut pending = Vec::new();
        while let Some(frame) = body.frame().await {
            let Ok(data) = frame?.into_data() else {
                continue;
            };
            pending.extend_from_slice(&data);
            while let Some(i) = pending.iter().position(|b| *b == b'\n') {
                let text = String::from_utf8_lossy(&pending[..i]).into_owned();
                pending.drain(..=i);
                if !line(&text)? {
                    return Ok(());
                }
            }
        }
        Ok(())
    })
}

async fn send(addr: &ApiAddr, path: &str) -> anyhow::Result<http::Response<hyper::body::Incoming>> {
    match addr {
        ApiAddr::Unix(p) => {
            let s = tokio::net::UnixStream::connect(p).await.with_context(|| {
                format!(
                    "cannot reach the control plane at {} (is the local runtime up? start it with `conduit local up` or `conduit demo`, or point --api-addr at a control plane)",
                    p.display()
                )
            })?;
            request(TokioIo::new(s), path).await
        }
        ApiAddr::Tcp(a) => {
            let s = tokio::net::TcpStream::connect(a.as_str())
                .await
                .with_context(|| format!("cannot reach the control plane at {a}"))?;
            request(TokioIo::new(s), path).await
        }
    }
}

async fn request<I>(io: I, path: &str) -> anyhow::Result<http::Response<hyper::body::Incoming>>
where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let (mut sender, conn) = hyper::client::conn::http1::handshake(io).await?;
    tokio::spawn(conn);
    let req = http::Request::get(path)
        .header(http::header::HOST, "conduit-api")
        .body(Empty::<bytes::Bytes>::new())?;
    Ok(sender.send_request(req).await?)
}

/// The canonical short name of a resource kind (`deploy`, `pod`, `ns`), if known.
pub fn resource_kind(raw: &str) -> Option<&'static str> {
    match raw {
        "ns" | "namespace" | "namespaces" => Some("ns"),
        "deploy" | "deployment" | "deployments" => Some("deploy"),
        "po" | "pod" | "pods" => Some("pod"),
        _ => None,
    }
}

/// Percent-encodes a query parameter's value.
pub fn query_value(v: &str) -> String {
    v.bytes()
        .map(|b| match b {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}
