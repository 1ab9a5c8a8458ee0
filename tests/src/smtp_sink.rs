//! An SMTP sink for tests: a tiny server on 127.0.0.1 that speaks enough
//! SMTP for lettre (EHLO/HELO, AUTH PLAIN/LOGIN, MAIL FROM, RCPT TO, DATA,
//! RSET, NOOP, QUIT) and records every message (envelope and data). It can
//! refuse mail with a given reply code, refuse logins, or stop listening and
//! start again on the same port.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::{JoinHandle, JoinSet};

/// One message as it arrived.
#[derive(Clone, Debug)]
pub struct Received {
    pub from: String,
    pub to: Vec<String>,
    /// Headers and body, dot-unstuffed, CRLF line ends.
    pub data: String,
    /// (username, password) of the AUTH on this connection, if any.
    pub auth: Option<(String, String)>,
}

impl Received {
    pub fn header(&self, name: &str) -> Option<String> {
        let prefix = format!("{}:", name.to_ascii_lowercase());
        self.data
            .split("\r\n")
            .take_while(|l| !l.is_empty())
            .find(|l| l.to_ascii_lowercase().starts_with(&prefix))
            .map(|l| l[prefix.len()..].trim().to_string())
    }

    pub fn subject(&self) -> String {
        self.header("Subject").unwrap_or_default()
    }

    /// The body after the headers, with soft line breaks of
    /// quoted-printable undone (lettre folds long lines).
    pub fn body(&self) -> String {
        let body = self.data.split_once("\r\n\r\n").map_or("", |(_, b)| b);
        match self.header("Content-Transfer-Encoding").as_deref() {
            Some("base64") => {
                let joined: String = body.split("\r\n").collect();
                String::from_utf8(STANDARD.decode(joined).unwrap_or_default()).unwrap_or_default()
            }
            Some("quoted-printable") => body.replace("=\r\n", "").replace("=3D", "="),
            _ => body.to_string(),
        }
    }
}

/// How the sink answers `MAIL FROM` (and so every message).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    Accept,
    /// Refuse the message with this reply code (e.g. 451, 550).
    Refuse(u16),
    /// Refuse every login with 535.
    RefuseAuth,
}

#[derive(Default)]
struct Shared {
    received: Vec<Received>,
    mode: Option<Mode>,
    /// MAIL FROM commands seen, refused ones included.
    attempts: usize,
}

pub struct SmtpSink {
    pub addr: SocketAddr,
    shared: Arc<Mutex<Shared>>,
    server: Option<JoinHandle<()>>,
}

impl SmtpSink {
    /// Listening on a free port, accepting mail.
    pub async fn start() -> anyhow::Result<SmtpSink> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let mut sink = SmtpSink {
            addr: listener.local_addr()?,
            shared: Arc::new(Mutex::new(Shared::default())),
            server: None,
        };
        sink.serve(listener);
        Ok(sink)
    }

    /// Stops listening and drops open connections; messages are kept.
    pub fn stop(&mut self) {
        if let Some(s) = self.server.take() {
            s.abort();
        }
    }

    /// Listens again on the same address.
    pub async fn restart(&mut self) -> anyhow::Result<()> {
        self.stop();
        let listener = TcpListener::bind(self.addr).await?;
        self.serve(listener);
        Ok(())
    }

    pub fn set_mode(&self, mode: Mode) {
        self.lock().mode = Some(mode);
    }

    pub fn received(&self) -> Vec<Received> {
        self.lock().received.clone()
    }

    pub fn attempts(&self) -> usize {
        self.lock().attempts
    }

    /// Waits (with a deadline) until `n` messages have arrived.
    pub async fn wait_for(&self, n: usize, secs: u64) -> anyhow::Result<Vec<Received>> {
        crate::eventually(secs, &format!("{n} emails"), || async {
            let got = self.received();
            (got.len() >= n).then_some(got)
        })
        .await
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Shared> {
        self.shared.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn serve(&mut self, listener: TcpListener) {
        let shared = self.shared.clone();
        self.server = Some(tokio::spawn(async move {
            // Dropped with this task: stopping the sink closes every connection.
            let mut connections = JoinSet::new();
            while let Ok((stream, _)) = listener.accept().await {
                connections.spawn(session(stream, shared.clone()));
                while connections.try_join_next().is_some() {}
            }
        }));
    }
}

impl Drop for SmtpSink {
    fn drop(&mut self) {
        self.stop();
    }
}

async fn session(stream: TcpStream, shared: Arc<Mutex<Shared>>) -> anyhow::Result<()> {
    let (read, mut write) = stream.into_split();
    let mut lines = BufReader::new(read).lines();
    let mode = || {
        shared
            .lock()
            .map(|s| s.mode.unwrap_or(Mode::Accept))
            .unwrap_or(Mode::Accept)
    };
    write.write_all(b"220 sink.test ESMTP ready\r\n").await?;
    let (mut from, mut to, mut auth) = (String::new(), Vec::new(), None);
    while let Some(line) = lines.next_line().await? {
        let upper = line.to_ascii_uppercase();
        let reply: String = if upper.starts_with("EHLO") {
            "250-sink.test\r\n250-8BITMIME\r\n250-AUTH PLAIN LOGIN\r\n250 OK".into()
        } else if upper.starts_with("HELO")
            || upper.starts_with("RSET")
            || upper.starts_with("NOOP")
        {
            if upper.starts_with("RSET") {
                (from, to) = (String::new(), Vec::new());
            }
            "250 OK".into()
        } else if upper.starts_with("AUTH") {
            let creds = read_auth(&line, &mut lines, &mut write).await?;
            if mode() == Mode::RefuseAuth {
                "535 5.7.8 authentication failed".into()
            } else {
                auth = creds;
                "235 2.7.0 authenticated".into()
            }
        } else if upper.starts_with("MAIL FROM:") {
            shared.lock().map(|mut s| s.attempts += 1).ok();
            match mode() {
                Mode::Refuse(code) => format!("{code} 4.3.0 not now"),
                _ => {
                    from = address(&line[10..]);
                    "250 OK".into()
                }
            }
        } else if upper.starts_with("RCPT TO:") {
            to.push(address(&line[8..]));
            "250 OK".into()
        } else if upper == "DATA" {
            write.write_all(b"354 end with <CRLF>.<CRLF>\r\n").await?;
            let mut data = String::new();
            while let Some(l) = lines.next_line().await? {
                if l == "." {
                    break;
                }
                data.push_str(
                    l.strip_prefix('.')
                        .filter(|_| l.starts_with(".."))
                        .unwrap_or(&l),
                );
                data.push_str("\r\n");
            }
            let message = Received {
                from: std::mem::take(&mut from),
                to: std::mem::take(&mut to),
                data,
                auth: auth.clone(),
            };
            shared.lock().map(|mut s| s.received.push(message)).ok();
            "250 OK queued".into()
        } else if upper == "QUIT" {
            write.write_all(b"221 bye\r\n").await?;
            return Ok(());
        } else {
            "502 command not implemented".into()
        };
        write.write_all(format!("{reply}\r\n").as_bytes()).await?;
    }
    Ok(())
}

/// `AUTH PLAIN [b64]` or `AUTH LOGIN`, reading continuation lines as needed.
async fn read_auth(
    line: &str,
    lines: &mut tokio::io::Lines<BufReader<tokio::net::tcp::OwnedReadHalf>>,
    write: &mut tokio::net::tcp::OwnedWriteHalf,
) -> anyhow::Result<Option<(String, String)>> {
    let decode = |s: &str| {
        String::from_utf8(STANDARD.decode(s.trim()).unwrap_or_default()).unwrap_or_default()
    };
    let mut words = line.split_whitespace().skip(1);
    let mechanism = words.next().unwrap_or_default().to_ascii_uppercase();
    let mut ask = async |prompt: &str| -> anyhow::Result<String> {
        write
            .write_all(format!("334 {prompt}\r\n").as_bytes())
            .await?;
        Ok(lines.next_line().await?.unwrap_or_default())
    };
    if mechanism == "LOGIN" {
        let user = decode(&ask("VXNlcm5hbWU6").await?);
        let pass = decode(&ask("UGFzc3dvcmQ6").await?);
        return Ok(Some((user, pass)));
    }
    let initial = match words.next() {
        Some(w) => w.to_string(),
        None => ask("").await?,
    };
    let plain = decode(&initial);
    let mut parts = plain.split('\0').skip(1);
    Ok(Some((
        parts.next().unwrap_or_default().to_string(),
        parts.next().unwrap_or_default().to_string(),
    )))
}

fn address(s: &str) -> String {
    let s = s.trim();
    let end = s.find('>').unwrap_or(s.len());
    s.trim_start_matches('<')[..end.saturating_sub(usize::from(s.starts_with('<')))].to_string()
}
