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
    /// Targets whose connect failed, and when. Usually empty: the request
    /// path then takes the lock, sees nothing, and allocates nothing.
    down: Mutex<HashMap<Target, Instant>>,
}

impl Upstreams {
    /// The index of the target to try next, or `None` when all were tried.
    pub fn pick(&self, route: &Route, tried: &[usize]) -> Option<usize> {
        let n = route.targets.len();
        if tried.len() >= n {
            return None;
        }
        let start = self.next.fetch_add(1, Ordering::Relaxed);
        let mut candidates = (0..n)
            .map(|i| (start + i) % n)
            .filter(|i| !tried.contains(i));
        let first = candidates.next()?;
        let down = self.down.lock().unwrap_or_else(PoisonError::into_inner);
        let is_up = |i: usize| {
            down.get(&route.targets[i])
                .is_none_or(|at| at.elapsed() >= DOWN_FOR)
        };
        if down.is_empty() || is_up(first) {
            return Some(first);
        }
        Some(candidates.find(|&i| is_up(i)).unwrap_or(first))
    }

    pub fn mark_down(&self, target: &Target) {
        self.down
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(target.clone(), Instant::now());
    }

    pub fn mark_up(&self, target: &Target) {
        let mut down = self.down.lock().unwrap_or_else(PoisonError::into_inner);
        if !down.is_empty() {
            down.remove(target);
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

#[cfg(test)]
mod tests {
    use super::*;
    use portico_protocol::HostConfig;

    fn route(n: u16) -> Route {
        let targets: Vec<Target> = (1..=n)
            .map(|p| Target {
                host: "10.0.0.1".into(),
                port: p,
            })
            .collect();
        Route {
            config: HostConfig::new("a.example.com"),
            targets,
        }
    }

    #[test]
    fn round_robin_skips_tried_and_down_targets() {
        let (u, r) = (Upstreams::default(), route(3));
        let picks: Vec<usize> = (0..6).filter_map(|_| u.pick(&r, &[])).collect();
        assert_eq!(picks, vec![0, 1, 2, 0, 1, 2]);
        u.mark_down(&r.targets[0]);
        assert!(
            (0..6).all(|_| u.pick(&r, &[]) != Some(0)),
            "a down target is skipped"
        );
        assert_eq!(
            u.pick(&r, &[1, 2]),
            Some(0),
            "only the down one left: try it anyway"
        );
        assert_eq!(u.pick(&r, &[0, 1, 2]), None, "all tried");
        u.mark_up(&r.targets[0]);
        assert!((0..3).any(|_| u.pick(&r, &[]) == Some(0)));
    }
}
