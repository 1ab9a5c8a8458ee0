//! The readiness probe every adapter shares: one HTTP/1.0 `GET` of an
//! edge's admin endpoint over a plain TCP connection, bounded by a timeout.
//! A tiny client on purpose: the control plane has no HTTP client
//! dependency, and this needs only a status line and a short body.

use super::Probe;
use std::net::SocketAddr;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Larger answers are cut here; a probe reads a status and a line.
const MAX_RESPONSE: usize = 16 * 1024;

/// `GET path` on `addr`: 200 is [`Probe::Ready`], any other status is
/// [`Probe::NotReady`] with the status and the body's first line, no
/// answer within `timeout` is [`Probe::Unreachable`].
pub async fn http_probe(addr: SocketAddr, path: &str, timeout: Duration) -> Probe {
    match tokio::time::timeout(timeout, get(addr, path)).await {
        Err(_) => Probe::Unreachable(format!(
            "http://{addr}{path} did not answer within {} ms",
            timeout.as_millis()
        )),
        Ok(Err(e)) => Probe::Unreachable(format!("http://{addr}{path}: {e}")),
        Ok(Ok((200, _))) => Probe::Ready,
        Ok(Ok((status, body))) => {
            let line = body.lines().next().unwrap_or("").trim();
            Probe::NotReady(format!("{path} answered {status}: {line}"))
        }
    }
}

/// One request, `Connection: close`; reads until the end of the body
/// (by `Content-Length`) or end of stream, whichever comes first.
async fn get(addr: SocketAddr, path: &str) -> std::io::Result<(u16, String)> {
    let mut stream = TcpStream::connect(addr).await?;
    let request = format!("GET {path} HTTP/1.0\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await?;
    let mut buf = Vec::with_capacity(512);
    let mut chunk = [0u8; 1024];
    loop {
        if let Some(response) = parse(&buf)
            && response.complete
        {
            return Ok((response.status, response.body));
        }
        let n = stream.read(&mut chunk).await?;
        if n == 0 || buf.len() >= MAX_RESPONSE {
            return parse(&buf).map(|r| (r.status, r.body)).ok_or_else(|| {
                std::io::Error::new(
                    std::io::ErrorKind::InvalidData,
                    "the connection closed before a complete HTTP status line",
                )
            });
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

struct Response {
    status: u16,
    body: String,
    /// All of the body that `Content-Length` announced has arrived.
    complete: bool,
}

/// `None` until the header block is complete and the status line parses.
fn parse(buf: &[u8]) -> Option<Response> {
    let end = buf.windows(4).position(|w| w == b"\r\n\r\n")?;
    let head = std::str::from_utf8(&buf[..end]).ok()?;
    let mut lines = head.split("\r\n");
    let status = lines
        .next()?
        .strip_prefix("HTTP/1.")?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()?;
    let length = lines.find_map(|l| {
        let (name, value) = l.split_once(':')?;
        name.eq_ignore_ascii_case("content-length")
            .then(|| value.trim().parse::<usize>().ok())
            .flatten()
    });
    let body = &buf[end + 4..];
    Some(Response {
        status,
        body: String::from_utf8_lossy(body).into_owned(),
        complete: length.is_some_and(|len| body.len() >= len),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::net::TcpListener;

    async fn serve_once(answer: &'static str) -> SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            let (mut conn, _) = listener.accept().await.unwrap();
            let mut buf = [0u8; 1024];
            let _ = conn.read(&mut buf).await;
            conn.write_all(answer.as_bytes()).await.unwrap();
            // Keep the connection open: the probe must stop at Content-Length.
            let _ = conn.read(&mut buf).await;
        });
        addr
    }

    #[tokio::test]
    async fn ok_is_ready_and_503_says_why() {
        let ok = serve_once("HTTP/1.1 200 OK\r\nContent-Length: 8\r\n\r\nready 7\n").await;
        assert_eq!(
            http_probe(ok, "/readyz", Duration::from_secs(5)).await,
            Probe::Ready
        );
        let not = serve_once(
            "HTTP/1.1 503 Service Unavailable\r\ncontent-length: 19\r\n\r\nno snapshot loaded\n",
        )
        .await;
        assert_eq!(
            http_probe(not, "/readyz", Duration::from_secs(5)).await,
            Probe::NotReady("/readyz answered 503: no snapshot loaded".into())
        );
    }

    #[tokio::test]
    async fn a_closed_port_or_silence_is_unreachable() {
        let closed = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap()
        };
        let probe = http_probe(closed, "/readyz", Duration::from_secs(5)).await;
        assert!(matches!(probe, Probe::Unreachable(_)), "{probe:?}");

        let silent = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = silent.local_addr().unwrap();
        let probe = http_probe(addr, "/readyz", Duration::from_millis(200)).await;
        assert!(
            matches!(&probe, Probe::Unreachable(why) if why.contains("within 200 ms")),
            "{probe:?}"
        );
    }

    #[test]
    fn parse_waits_for_the_whole_header_block() {
        assert!(parse(b"HTTP/1.1 200 OK\r\nContent-Le").is_none());
        assert!(parse(b"garbage\r\n\r\n").is_none());
        let r = parse(b"HTTP/1.0 404 Not Found\r\n\r\nnope").unwrap();
        assert_eq!((r.status, r.complete), (404, false));
    }
}
