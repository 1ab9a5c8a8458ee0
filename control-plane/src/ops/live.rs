//! Live updates. One task per process LISTENs on `portico_ops` (the triggers
//! of the health migration notify it for every changed run, step, check
//! state, alert, edge and domain status) and fans the change out on a
//! broadcast channel as a set of [`Topics`]. Each `/ops/events` client gets
//! coalesced `changed` events (at most one per [`MIN_GAP`]) naming the
//! topics; the page's script re-fetches the sections that show them.

use super::OpsState;
use super::error::OpsError;
use super::session::Session;
use axum::extract::State;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures::Stream;
use sqlx::PgPool;
use sqlx::postgres::PgListener;
use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;
use tokio::sync::{OnceCell, broadcast, watch};
use tokio::time::Instant;

pub const CHANNEL: &str = "portico_ops";
/// A client hears at most one event per this gap (so ~2 a second).
pub const MIN_GAP: Duration = Duration::from_millis(500);
const KEEPALIVE: Duration = Duration::from_secs(15);

/// A set of things that changed, as a bit set.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Topics(u8);

impl Topics {
    pub const EDGES: Topics = Topics(1);
    pub const DOMAINS: Topics = Topics(2);
    pub const RUNS: Topics = Topics(4);
    pub const HEALTH: Topics = Topics(8);
    pub const ALERTS: Topics = Topics(16);
    pub const ALL: Topics = Topics(31);
    const NAMES: [(Topics, &'static str); 5] = [
        (Topics::EDGES, "edges"),
        (Topics::DOMAINS, "domains"),
        (Topics::RUNS, "runs"),
        (Topics::HEALTH, "health"),
        (Topics::ALERTS, "alerts"),
    ];

    /// What a notification from `table` may have changed.
    pub fn of_table(table: &str) -> Topics {
        match table {
            "edges" => Topics::EDGES,
            "domains" => Topics::DOMAINS,
            "repair_runs" | "repair_steps" => Topics::RUNS,
            "health_states" => Topics(Topics::HEALTH.0 | Topics::EDGES.0),
            "alerts" => Topics::ALERTS,
            _ => Topics::ALL,
        }
    }

    /// From a `portico_ops` payload, `{"table": ..., "id": ...}`.
    pub fn of_payload(payload: &str) -> Topics {
        #[derive(serde::Deserialize)]
        struct Payload {
            table: String,
        }
        serde_json::from_str::<Payload>(payload)
            .map(|p| Topics::of_table(&p.table))
            .unwrap_or(Topics::ALL)
    }

    pub fn union(self, other: Topics) -> Topics {
        Topics(self.0 | other.0)
    }

    /// Space-separated names, as the `changed` event's data.
    pub fn names(self) -> String {
        Topics::NAMES
            .iter()
            .filter(|(t, _)| self.0 & t.0 != 0)
            .map(|(_, n)| *n)
            .collect::<Vec<_>>()
            .join(" ")
    }
}

/// The process's one listener and its subscribers.
#[derive(Clone)]
pub struct Hub {
    pool: PgPool,
    tx: broadcast::Sender<Topics>,
    listening: watch::Receiver<bool>,
    listening_tx: Arc<watch::Sender<bool>>,
    started: Arc<OnceCell<()>>,
    clients: Arc<AtomicUsize>,
    max_clients: usize,
    /// The publisher's config-version watch: its sender goes away when the
    /// process stops, which ends every event stream (so a graceful shutdown
    /// does not wait for open dashboards).
    process: watch::Receiver<u64>,
}

impl Hub {
    pub fn new(pool: PgPool, process: watch::Receiver<u64>, max_clients: usize) -> Hub {
        let (tx, _) = broadcast::channel(256);
        let (listening_tx, listening) = watch::channel(false);
        Hub {
            pool,
            tx,
            listening,
            listening_tx: Arc::new(listening_tx),
            started: Arc::new(OnceCell::new()),
            clients: Arc::new(AtomicUsize::new(0)),
            max_clients,
            process,
        }
    }

    /// A new client: starts the listener on first use, and returns once it
    /// listens, so that a change made after this returns is heard.
    pub async fn subscribe(&self) -> Result<Client, OpsError> {
        let slot = Slot::take(&self.clients, self.max_clients).ok_or(OpsError::Busy)?;
        self.started
            .get_or_init(|| async {
                tokio::spawn(listen(
                    self.pool.clone(),
                    self.tx.clone(),
                    self.listening_tx.clone(),
                    self.process.clone(),
                ));
            })
            .await;
        let rx = self.tx.subscribe();
        let mut listening = self.listening.clone();
        tokio::time::timeout(Duration::from_secs(10), listening.wait_for(|l| *l))
            .await
            .map_err(|_| OpsError::Internal("the ops listener did not start in 10 s".into()))?
            .map_err(|_| OpsError::Internal("the ops listener stopped".into()))?;
        Ok(Client {
            rx,
            _slot: slot,
            last: None,
            process: self.process.clone(),
        })
    }

    /// Clients connected now.
    pub fn clients(&self) -> usize {
        self.clients.load(Ordering::Relaxed)
    }
}

/// Counts a connected client until dropped.
struct Slot(Arc<AtomicUsize>);

impl Slot {
    fn take(count: &Arc<AtomicUsize>, max: usize) -> Option<Slot> {
        count
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < max).then_some(n + 1)
            })
            .ok()
            .map(|_| Slot(count.clone()))
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// LISTENs until the pool closes; after a lost connection everything may
/// have changed, so subscribers hear [`Topics::ALL`].
async fn listen(
    pool: PgPool,
    tx: broadcast::Sender<Topics>,
    listening: Arc<watch::Sender<bool>>,
    process: watch::Receiver<u64>,
) {
    let stopping = || pool.is_closed() || process.has_changed().is_err();
    while !stopping() {
        let mut listener = match PgListener::connect_with(&pool).await {
            Ok(l) => l,
            Err(e) => {
                tracing::warn!(error = %e, "ops listener: cannot connect; retrying");
                tokio::time::sleep(Duration::from_secs(1)).await; // allow-sleep: reconnect backoff
                continue;
            }
        };
        if let Err(e) = listener.listen(CHANNEL).await {
            tracing::warn!(error = %e, "ops listener: LISTEN failed; retrying");
            tokio::time::sleep(Duration::from_secs(1)).await; // allow-sleep: reconnect backoff
            continue;
        }
        if *listening.borrow() {
            let _ = tx.send(Topics::ALL);
        }
        listening.send_replace(true);
        loop {
            match tokio::time::timeout(Duration::from_secs(5), listener.try_recv()).await {
                Err(_) if stopping() => return,
                Err(_) => continue,
                Ok(Ok(Some(n))) => {
                    let _ = tx.send(Topics::of_payload(n.payload()));
                }
                // The connection was lost; `try_recv` reconnects on the next call.
                Ok(Ok(None)) => {
                    let _ = tx.send(Topics::ALL);
                }
                Ok(Err(e)) => {
                    tracing::warn!(error = %e, "ops listener: connection failed; reconnecting");
                    break;
                }
            }
        }
    }
}

/// One SSE subscriber.
pub struct Client {
    rx: broadcast::Receiver<Topics>,
    _slot: Slot,
    last: Option<Instant>,
    process: watch::Receiver<u64>,
}

impl Client {
    /// The next coalesced change; `None` when the hub or the process stops.
    pub async fn next(&mut self) -> Option<Topics> {
        let first = loop {
            tokio::select! {
                r = self.rx.recv() => break r,
                c = self.process.changed() => if c.is_err() { return None },
            }
        };
        let mut topics = match first {
            Ok(t) => t,
            Err(broadcast::error::RecvError::Lagged(_)) => Topics::ALL,
            Err(broadcast::error::RecvError::Closed) => return None,
        };
        if let Some(last) = self.last {
            tokio::time::sleep_until(last + MIN_GAP).await;
        }
        loop {
            match self.rx.try_recv() {
                Ok(t) => topics = topics.union(t),
                Err(broadcast::error::TryRecvError::Lagged(_)) => topics = Topics::ALL,
                Err(_) => break,
            }
        }
        self.last = Some(Instant::now());
        Some(topics)
    }
}

/// `GET /ops/events`: the SSE stream of `changed` events.
pub async fn events(State(state): State<OpsState>, _session: Session) -> Response {
    match state.hub.subscribe().await {
        Ok(client) => Sse::new(stream(client))
            .keep_alive(KeepAlive::new().interval(KEEPALIVE))
            .into_response(),
        Err(e) => e.into_response(),
    }
}

fn stream(client: Client) -> impl Stream<Item = Result<Event, Infallible>> {
    futures::stream::unfold(client, |mut c| async move {
        let topics = c.next().await?;
        Some((
            Ok(Event::default().event("changed").data(topics.names())),
            c,
        ))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payloads_map_to_topics() {
        let t = |p: &str| Topics::of_payload(p).names();
        assert_eq!(t(r#"{"table":"repair_steps","id":"x"}"#), "runs");
        assert_eq!(t(r#"{"table":"health_states","id":"x"}"#), "edges health");
        assert_eq!(t(r#"{"table":"edges","id":"x"}"#), "edges");
        assert_eq!(t("not json"), "edges domains runs health alerts");
    }

    #[test]
    fn slots_are_bounded_and_returned() {
        let count = Arc::new(AtomicUsize::new(0));
        let a = Slot::take(&count, 2);
        let b = Slot::take(&count, 2);
        assert!(a.is_some() && b.is_some());
        assert!(Slot::take(&count, 2).is_none());
        drop(a);
        assert!(Slot::take(&count, 2).is_some());
    }

    #[tokio::test]
    async fn events_are_coalesced() {
        let (tx, rx) = broadcast::channel(16);
        let count = Arc::new(AtomicUsize::new(0));
        let (process_tx, process) = watch::channel(0);
        let mut c = Client {
            rx,
            _slot: Slot::take(&count, 1).unwrap(),
            last: None,
            process,
        };
        tx.send(Topics::EDGES).unwrap();
        tx.send(Topics::RUNS).unwrap();
        assert_eq!(c.next().await, Some(Topics::EDGES.union(Topics::RUNS)));
        tx.send(Topics::ALERTS).unwrap();
        assert_eq!(c.next().await, Some(Topics::ALERTS));
        // A new config version is not a dashboard change ...
        process_tx.send(1).unwrap();
        tx.send(Topics::EDGES).unwrap();
        assert_eq!(c.next().await, Some(Topics::EDGES));
        // ... but the process stopping ends the stream.
        drop(process_tx);
        assert_eq!(c.next().await, None);
    }
}
