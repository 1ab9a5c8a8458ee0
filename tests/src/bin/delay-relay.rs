//! A TCP relay that adds latency, for the multi-region rehearsal
//! (`tests/rehearsal/regions.sh`; the kernel here has no netem). Every byte
//! is held `--delay-ms` before it is written on, in both directions, so a
//! round trip costs twice the delay; throughput is not limited.
//!
//!   delay-relay --listen ADDR --to ADDR [--to ADDR ...] --delay-ms N [--proxy-v2]
//!
//! Several `--to`: each new connection tries them in order and takes the
//! first that accepts (failover, as a client does across the addresses of a
//! name that resolves to several control-plane machines).
//! `--proxy-v2` writes a PROXY protocol v2 header with the client's address
//! first, as Fly's `proxy_proto` handler does.

use std::net::SocketAddr;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::time::Instant;

struct Args {
    listen: SocketAddr,
    to: Vec<SocketAddr>,
    delay: Duration,
    proxy_v2: bool,
}

fn args() -> anyhow::Result<Args> {
    let (mut listen, mut to, mut delay, mut proxy_v2) = (None, Vec::new(), None, false);
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || {
            it.next()
                .ok_or_else(|| anyhow::anyhow!("{flag} needs a value"))
        };
        match flag.as_str() {
            "--listen" => listen = Some(value()?.parse()?),
            "--to" => to.push(value()?.parse()?),
            "--delay-ms" => delay = Some(Duration::from_millis(value()?.parse()?)),
            "--proxy-v2" => proxy_v2 = true,
            other => anyhow::bail!("unknown argument {other}"),
        }
    }
    anyhow::ensure!(!to.is_empty(), "at least one --to ADDR");
    Ok(Args {
        listen: listen.ok_or_else(|| anyhow::anyhow!("--listen ADDR is required"))?,
        to,
        delay: delay.unwrap_or_default(),
        proxy_v2,
    })
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = std::sync::Arc::new(args()?);
    let listener = TcpListener::bind(args.listen).await?;
    eprintln!(
        "delay-relay {} -> {:?} (+{:?} each way)",
        args.listen, args.to, args.delay
    );
    loop {
        let (inbound, client) = listener.accept().await?;
        let args = args.clone();
        tokio::spawn(async move {
            if let Err(e) = relay(inbound, client, &args).await {
                eprintln!("delay-relay {client}: {e}");
            }
        });
    }
}

async fn relay(inbound: TcpStream, client: SocketAddr, args: &Args) -> anyhow::Result<()> {
    let mut outbound = None;
    for target in &args.to {
        let connect = TcpStream::connect(target);
        if let Ok(Ok(s)) = tokio::time::timeout(Duration::from_secs(3), connect).await {
            outbound = Some(s);
            break;
        }
    }
    let mut outbound = outbound.ok_or_else(|| anyhow::anyhow!("no target accepted"))?;
    let _ = inbound.set_nodelay(true);
    let _ = outbound.set_nodelay(true);
    let prefix = if args.proxy_v2 {
        proxy_header(client, inbound.local_addr()?)?
    } else {
        Vec::new()
    };
    let (in_read, in_write) = inbound.into_split();
    outbound.write_all(&prefix).await?;
    let (out_read, out_write) = outbound.into_split();
    tokio::join!(
        delayed(in_read, out_write, args.delay),
        delayed(out_read, in_write, args.delay),
    );
    Ok(())
}

fn proxy_header(client: SocketAddr, local: SocketAddr) -> anyhow::Result<Vec<u8>> {
    use ppp::v2::{Builder, Command, IPv4, IPv6, Protocol, Version};
    let header = match (client, local) {
        (SocketAddr::V4(c), SocketAddr::V4(l)) => Builder::with_addresses(
            Version::Two | Command::Proxy,
            Protocol::Stream,
            IPv4::new(*c.ip(), *l.ip(), c.port(), l.port()),
        ),
        (c, l) => {
            let v6 = |a: SocketAddr| match a {
                SocketAddr::V4(a) => a.ip().to_ipv6_mapped(),
                SocketAddr::V6(a) => *a.ip(),
            };
            Builder::with_addresses(
                Version::Two | Command::Proxy,
                Protocol::Stream,
                IPv6::new(v6(c), v6(l), c.port(), l.port()),
            )
        }
    };
    Ok(header.build()?)
}

/// Copies `from` to `to`, each chunk written `delay` after it was read.
async fn delayed(
    mut from: impl AsyncRead + Unpin,
    mut to: impl AsyncWrite + Unpin + Send + 'static,
    delay: Duration,
) {
    let (tx, mut rx) = mpsc::unbounded_channel::<(Instant, Vec<u8>)>();
    let writer = tokio::spawn(async move {
        while let Some((due, chunk)) = rx.recv().await {
            tokio::time::sleep_until(due).await; // allow-sleep: the latency is the point
            if to.write_all(&chunk).await.is_err() {
                return;
            }
        }
        let _ = to.shutdown().await;
    });
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        match from.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                if tx
                    .send((Instant::now() + delay, buf[..n].to_vec()))
                    .is_err()
                {
                    break;
                }
            }
        }
    }
    drop(tx);
    let _ = writer.await;
}
