//! Writes an edge snapshot for benchmarks: one named host (with a given
//! certificate and key) plus N generated hosts, each with its own ECDSA
//! P-256 certificate from a throwaway CA.
//!
//!   bench-snapshot --out FILE --hosts N [--host NAME --target ADDR --cert PEM --key PEM]

use portico_e2e::edge::{TestCa, host, snapshot};
use portico_protocol::CertificateBundle;
use std::io::Write;

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let arg = |name: &str| {
        args.iter()
            .position(|a| a == name)
            .and_then(|i| args.get(i + 1))
            .cloned()
    };
    let out = arg("--out").ok_or_else(|| anyhow::anyhow!("--out FILE is required"))?;
    let n: usize = arg("--hosts").unwrap_or_else(|| "0".into()).parse()?;
    let target: std::net::SocketAddr = arg("--target")
        .unwrap_or_else(|| "127.0.0.1:18080".into())
        .parse()?;
    let mut hosts = Vec::with_capacity(n + 1);
    let mut certs = Vec::with_capacity(n + 1);
    if let (Some(name), Some(cert), Some(key)) = (arg("--host"), arg("--cert"), arg("--key")) {
        hosts.push(host(&name, &[target]));
        certs.push(CertificateBundle {
            names: vec![name],
            chain_pem: std::fs::read_to_string(cert)?,
            key_pem: std::fs::read_to_string(key)?,
            not_after: 4_000_000_000,
        });
    }
    let ca = TestCa::new()?;
    let started = std::time::Instant::now();
    for i in 0..n {
        let name = format!("h{i}.bench-hosts.example.com");
        certs.push(ca.bundle(&[name.as_str()])?);
        hosts.push(host(&name, &[target]));
        if i > 0 && i % 20_000 == 0 {
            eprintln!(
                "bench-snapshot: {i}/{n} certificates ({:.0?})",
                started.elapsed()
            );
        }
    }
    let mut file = std::io::BufWriter::new(std::fs::File::create(&out)?);
    serde_json::to_writer(&mut file, &snapshot(1, hosts, certs))?;
    file.flush()?;
    Ok(())
}
