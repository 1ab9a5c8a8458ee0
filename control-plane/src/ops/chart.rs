//! A server-rendered SVG chart of traffic over time: requests per second as
//! bars, the 5xx share as a line on its own 0–100 % scale. No script, no
//! library; `<title>` elements give every bar a tooltip and the figure a
//! text alternative.

use crate::db::dashboard::TrafficPoint;
use maud::{Markup, html};

const W: f64 = 720.0;
const H: f64 = 180.0;
const PAD: f64 = 28.0;

/// The chart of `points` (oldest first), each a window of `window_secs`.
pub fn traffic(points: &[TrafficPoint], window_secs: f64) -> Markup {
    if points.is_empty() {
        return html! { p.muted { "No traffic reported in this period." } };
    }
    let rps: Vec<f64> = points
        .iter()
        .map(|p| p.requests as f64 / window_secs.max(1.0))
        .collect();
    let max_rps = rps.iter().cloned().fold(0.0_f64, f64::max).max(1.0);
    let n = points.len() as f64;
    let slot = (W - 2.0 * PAD) / n;
    let bar = (slot * 0.8).max(1.0);
    let y_of = |v: f64, max: f64| H - PAD - (v / max) * (H - 2.0 * PAD);
    let error_line: Vec<String> = points
        .iter()
        .enumerate()
        .map(|(i, p)| {
            let x = PAD + slot * (i as f64 + 0.5);
            format!("{x:.1},{:.1}", y_of(error_pct(p), 100.0))
        })
        .collect();
    let total: i64 = points.iter().map(|p| p.requests).sum();
    let errors: i64 = points.iter().map(|p| p.errors).sum();
    let summary = format!(
        "{} windows, {total} requests, peak {max_rps:.1} req/s, {:.1} % 5xx overall",
        points.len(),
        pct(errors, total)
    );
    html! {
        figure.chart {
            svg viewBox=(format!("0 0 {W} {H}")) role="img" aria-label=(summary) width="100%" {
                title { (summary) }
                line x1=(PAD) y1=(H - PAD) x2=(W - PAD) y2=(H - PAD) class="axis" {}
                text x=(2) y=(PAD) class="tick" { (format!("{max_rps:.1}/s")) }
                text x=(W - 1.0) y=(PAD) class="tick err" text-anchor="end" { "100%" }
                @for (i, (p, r)) in points.iter().zip(&rps).enumerate() {
                    rect x=(format!("{:.1}", PAD + slot * i as f64)) y=(format!("{:.1}", y_of(*r, max_rps)))
                        width=(format!("{bar:.1}")) height=(format!("{:.1}", H - PAD - y_of(*r, max_rps)))
                        class="bar" {
                        title { (format!("{}: {r:.1} req/s, {:.1} % 5xx", p.window_start.format("%H:%M:%S"), error_pct(p))) }
                    }
                }
                polyline points=(error_line.join(" ")) class="errline" {}
                text x=(PAD) y=(H - 8.0) class="tick" { (points[0].window_start.format("%H:%M")) }
                @if let Some(last) = points.last() {
                    text x=(W - PAD) y=(H - 8.0) class="tick" text-anchor="end" { (last.window_start.format("%H:%M")) }
                }
            }
            figcaption { (summary) ". Bars: requests per second; red line: share of 5xx." }
        }
    }
}

fn error_pct(p: &TrafficPoint) -> f64 {
    pct(p.errors, p.requests)
}

/// `part / whole` in percent; 0 when there is nothing.
pub fn pct(part: i64, whole: i64) -> f64 {
    if whole <= 0 {
        0.0
    } else {
        part as f64 * 100.0 / whole as f64
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::{TimeZone, Utc};

    #[test]
    fn renders_bars_and_the_error_line() {
        let at = |s: i64| Utc.timestamp_opt(1_700_000_000 + s, 0).unwrap();
        let points = vec![
            TrafficPoint {
                window_start: at(0),
                requests: 100,
                errors: 0,
            },
            TrafficPoint {
                window_start: at(10),
                requests: 50,
                errors: 25,
            },
        ];
        let svg = traffic(&points, 10.0).into_string();
        assert_eq!(svg.matches("<rect").count(), 2);
        assert!(svg.contains("150 requests"), "{svg}");
        assert!(svg.contains("16.7 % 5xx overall"), "{svg}");
        assert!(svg.contains("5.0 req/s, 50.0 % 5xx"), "{svg}");
    }

    #[test]
    fn empty_and_zero_traffic_do_not_divide_by_zero() {
        assert!(traffic(&[], 10.0).into_string().contains("No traffic"));
        assert_eq!(pct(5, 0), 0.0);
    }
}
