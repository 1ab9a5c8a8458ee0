//! Choosing an upstream target: round-robin over a route's targets, skipping
//! ones that failed to connect recently (passive health) and ones this
//! request already tried. When every target is marked down, the marks are
//! ignored: trying beats refusing.

use crate::table::{Route, Target};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Mutex;
use std::sync::PoisonError;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

const DOWN_FOR: Duration = Duration::from_secs(10);

#[derive(Default)]
pub struct Upstreams {
    next: AtomicUsize,
    down: Mutex<HashMap<String, Instant>>,
}

impl Upstreams {
    /// The index of the target to try next, or `None` when all were tried.
    pub fn pick(&self, route: &Route, tried: &[usize]) -> Option<usize> {
        let n = route.targets.len();
        if tried.len() >= n {
            return None;
        }
        let start = self.next.fetch_add(1, Ordering::Relaxed);
        let candidates: Vec<usize> = (0..n)
            .map(|i| (start + i) % n)
            .filter(|i| !tried.contains(i))
            .collect();
        let down = self.down.lock().unwrap_or_else(PoisonError::into_inner);
        let healthy = candidates.iter().copied().find(|i| {
            down.get(&route.targets[*i].to_string())
                .is_none_or(|at| at.elapsed() >= DOWN_FOR)
        });
        healthy.or_else(|| candidates.first().copied())
    }

    pub fn mark_down(&self, target: &Target) {
        self.down
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(target.to_string(), Instant::now());
    }

    pub fn mark_up(&self, target: &Target) {
        let mut down = self.down.lock().unwrap_or_else(PoisonError::into_inner);
        if !down.is_empty() {
            down.remove(&target.to_string());
        }
    }
}

/// Resolves a target to a socket address (IP literals without a lookup).
pub async fn resolve(target: &Target) -> std::io::Result<SocketAddr> {
    if let Ok(ip) = target.host.parse::<std::net::IpAddr>() {
        return Ok(SocketAddr::new(ip, target.port));
    }
    tokio::net::lookup_host((target.host.as_str(), target.port))
        .await?
        .next()
        .ok_or_else(|| std::io::Error::other(format!("{} has no address", target.host)))
}
