//! The DNS server of the multi-region rehearsal (`tests/rehearsal/regions.sh`):
//! [`portico_e2e::dns_server::TestDns`] on a given address, serving the
//! records named on the command line until it is killed.
//!
//!   rehearsal-dns --listen ADDR [--record "NAME A|AAAA|CNAME|TXT VALUE"]...

use portico_e2e::dns_server::{TestDns, TestRecord};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let (mut listen, mut records) = (None, Vec::new());
    while let Some(flag) = args.next() {
        let value = args
            .next()
            .ok_or_else(|| anyhow::anyhow!("{flag} needs a value"))?;
        match flag.as_str() {
            "--listen" => listen = Some(value.parse()?),
            "--record" => records.push(record(&value)?),
            other => anyhow::bail!("unknown argument {other}"),
        }
    }
    let listen = listen.ok_or_else(|| anyhow::anyhow!("--listen ADDR is required"))?;
    let dns = TestDns::start_on(listen).await?;
    for (name, record) in records {
        eprintln!("rehearsal-dns: {name} {record:?}");
        dns.add(&name, record);
    }
    eprintln!("rehearsal-dns listening on {}", dns.addr());
    std::future::pending::<()>().await;
    Ok(())
}

fn record(spec: &str) -> anyhow::Result<(String, TestRecord)> {
    let mut parts = spec.splitn(3, ' ');
    let (Some(name), Some(kind), Some(value)) = (parts.next(), parts.next(), parts.next()) else {
        anyhow::bail!("record {spec:?}: expected NAME TYPE VALUE");
    };
    let record = match kind {
        "A" => TestRecord::A(value.parse()?),
        "AAAA" => TestRecord::Aaaa(value.parse()?),
        "CNAME" => TestRecord::Cname(value.to_string()),
        "TXT" => TestRecord::Txt(value.to_string()),
        other => anyhow::bail!("record {spec:?}: unknown type {other}"),
    };
    Ok((name.to_string(), record))
}
