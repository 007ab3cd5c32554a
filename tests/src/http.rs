//! A minimal HTTP/1.1 request reader for the loopback stand-ins.

use std::collections::HashMap;

use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, BufReader};

/// One request: method, path, lower-cased headers, body (by `content-length`).
#[derive(Debug, Clone, Default)]
pub struct Request {
    pub method: String,
    pub path: String,
    pub headers: HashMap<String, String>,
    pub body: Vec<u8>,
}

impl Request {
    /// The credential presented as `Authorization: Bearer` or `x-api-key`.
    pub fn key(&self) -> String {
        self.headers
            .get("authorization")
            .and_then(|v| v.strip_prefix("Bearer "))
            .or_else(|| self.headers.get("x-api-key").map(String::as_str))
            .unwrap_or_default()
            .to_string()
    }
}

pub async fn read_request<R: AsyncRead + Unpin>(r: R) -> std::io::Result<Request> {
    let mut r = BufReader::new(r);
    let mut line = String::new();
    r.read_line(&mut line).await?;
    let mut parts = line.split_whitespace();
    let method = parts.next().unwrap_or_default().to_string();
    let path = parts.next().unwrap_or_default().to_string();
    let mut headers = HashMap::new();
    loop {
        let mut h = String::new();
        r.read_line(&mut h).await?;
        let h = h.trim_end();
        if h.is_empty() {
            break;
        }
        if let Some((k, v)) = h.split_once(':') {
            headers.insert(k.trim().to_ascii_lowercase(), v.trim().to_string());
        }
    }
    let len: usize = headers
        .get("content-length")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let mut body = vec![0; len];
    r.read_exact(&mut body).await?;
    Ok(Request {
        method,
        path,
        headers,
        body,
    })
}

/// A connection a stand-in serves: plain TCP or TLS.
pub trait Io: AsyncRead + tokio::io::AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + tokio::io::AsyncWrite + Unpin + Send> Io for T {}

/// Binds a loopback port and serves every connection with `handler(stream, over_tls)`,
/// TLS-wrapped when an acceptor is given. Returns the base URL (`http://…` or `https://…`).
pub async fn serve_loopback<F, Fut>(tls: Option<tokio_rustls::TlsAcceptor>, handler: F) -> String
where
    F: Fn(Box<dyn Io>, bool) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let scheme = if tls.is_some() { "https" } else { "http" };
    let base = format!("{scheme}://{}", listener.local_addr().unwrap());
    let handler = std::sync::Arc::new(handler);
    tokio::spawn(async move {
        loop {
            let Ok((sock, _)) = listener.accept().await else {
                return;
            };
            let (tls, handler) = (tls.clone(), handler.clone());
            tokio::spawn(async move {
                match tls {
                    Some(acceptor) => {
                        if let Ok(stream) = acceptor.accept(sock).await {
                            handler(Box::new(stream), true).await;
                        }
                    }
                    None => handler(Box::new(sock), false).await,
                }
            });
        }
    });
    base
}
