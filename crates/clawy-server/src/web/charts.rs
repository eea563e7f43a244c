//! Server-rendered SVG line charts for the instance page (ACCESS-1 metrics).
//!
//! No JavaScript and no chart library: the page stays usable without scripts and the
//! CSP needs no exceptions. The SVG carries only numbers and labels we format here
//! (escaped anyway); colours come from classes in `app.css`, so dark mode works.

use std::fmt::Write as _;

use chrono::{DateTime, Utc};

/// Drawing area of every chart, in SVG user units (scaled to the card's width by CSS).
const W: f64 = 400.0;
const H: f64 = 150.0;
/// Room for the y-axis labels on the left and the time labels below.
const LEFT: f64 = 58.0;
const BOTTOM: f64 = 22.0;
const TOP: f64 = 8.0;
const RIGHT: f64 = 8.0;

/// How a series' values are shown on the axis.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unit {
    Percent,
    Bytes,
    BytesPerSec,
}

/// One line: a CSS class (`series-a`, `series-b`) and its legend label.
#[derive(Debug, Clone)]
pub struct Series {
    pub label: &'static str,
    pub class: &'static str,
    pub points: Vec<(DateTime<Utc>, f64)>,
}

/// Formats a value in the unit, e.g. `42%`, `1.5 GiB`, `320 KiB/s`.
pub fn format_value(v: f64, unit: Unit) -> String {
    match unit {
        Unit::Percent => format!("{:.0}%", v),
        Unit::Bytes => format_bytes(v),
        Unit::BytesPerSec => format!("{}/s", format_bytes(v)),
    }
}

/// `1536` → `1.5 KiB`.
pub fn format_bytes(v: f64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = v.max(0.0);
    let mut i = 0;
    while v >= 1024.0 && i < UNITS.len() - 1 {
        v /= 1024.0;
        i += 1;
    }
    if i == 0 || v >= 100.0 {
        format!("{:.0} {}", v, UNITS[i])
    } else {
        format!("{:.1} {}", v, UNITS[i])
    }
}

/// Rates from cumulative counters: bytes per second between consecutive samples. A
/// counter that went down (the VM restarted) starts over and yields no point.
pub fn rates(counter: &[(DateTime<Utc>, u64)]) -> Vec<(DateTime<Utc>, f64)> {
    counter
        .windows(2)
        .filter_map(|w| {
            let (t0, c0) = w[0];
            let (t1, c1) = w[1];
            let secs = (t1 - t0).num_milliseconds() as f64 / 1000.0;
            (secs > 0.0 && c1 >= c0).then(|| (t1, (c1 - c0) as f64 / secs))
        })
        .collect()
}

/// A "nice" axis maximum at or above `v` (1, 2, 2.5, 5 × 10ⁿ; powers of 1024 for bytes).
fn nice_max(v: f64, unit: Unit) -> f64 {
    if unit == Unit::Percent {
        return 100.0;
    }
    if v <= 0.0 || !v.is_finite() {
        return 1.0;
    }
    let base: f64 = 1024.0;
    let mut scale = 1.0;
    while v / scale >= base {
        scale *= base;
    }
    let x = v / scale;
    let step = [
        1.0, 2.0, 2.5, 5.0, 10.0, 20.0, 25.0, 50.0, 100.0, 200.0, 250.0, 500.0, 1000.0, 1024.0,
    ]
    .into_iter()
    .find(|s| *s >= x)
    .unwrap_or(1024.0);
    step * scale
}

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// Renders a chart as inline SVG markup. `title` labels it for screen readers. An empty
/// series set renders a "no data yet" chart of the same size, so the layout is stable.
pub fn line_chart(
    title: &str,
    unit: Unit,
    series: &[Series],
    from: DateTime<Utc>,
    to: DateTime<Utc>,
) -> String {
    let plot_w = W - LEFT - RIGHT;
    let plot_h = H - TOP - BOTTOM;
    let span_ms = (to - from).num_milliseconds().max(1) as f64;
    let max_v = series
        .iter()
        .flat_map(|s| s.points.iter().map(|(_, v)| *v))
        .filter(|v| v.is_finite())
        .fold(0.0_f64, f64::max);
    let y_max = nice_max(max_v, unit);
    let x_of = |t: DateTime<Utc>| {
        let f = ((t - from).num_milliseconds() as f64 / span_ms).clamp(0.0, 1.0);
        LEFT + f * plot_w
    };
    let y_of = |v: f64| TOP + plot_h - (v.clamp(0.0, y_max) / y_max) * plot_h;
    let has_data = series.iter().any(|s| {
        s.points
            .iter()
            .any(|(t, v)| v.is_finite() && *t >= from && *t <= to)
    });

    let mut svg = String::new();
    let _ = write!(
        svg,
        r#"<svg class="chart" viewBox="0 0 {W} {H}" role="img" aria-label="{}">"#,
        esc(title)
    );
    // Grid: 0, ½ and full scale, with labels.
    for frac in [0.0, 0.5, 1.0] {
        let y = y_of(y_max * frac);
        let _ = write!(
            svg,
            r#"<line class="chart-grid" x1="{LEFT}" y1="{y:.1}" x2="{:.1}" y2="{y:.1}"/>"#,
            W - RIGHT,
        );
        // Without data a scale would only show made-up numbers.
        if has_data {
            let _ = write!(
                svg,
                r#"<text class="chart-label" x="{:.1}" y="{:.1}" text-anchor="end">{}</text>"#,
                LEFT - 6.0,
                y + 4.0,
                esc(&format_value(y_max * frac, unit)),
            );
        }
    }
    // Time labels at both ends.
    let fmt_t = |t: DateTime<Utc>| {
        if span_ms > 2.0 * 86_400_000.0 {
            t.format("%d %b").to_string()
        } else {
            t.format("%H:%M").to_string()
        }
    };
    let _ = write!(
        svg,
        r#"<text class="chart-label" x="{LEFT}" y="{:.1}">{}</text><text class="chart-label" x="{:.1}" y="{:.1}" text-anchor="end">{}</text>"#,
        H - 4.0,
        esc(&fmt_t(from)),
        W - RIGHT,
        H - 4.0,
        esc(&fmt_t(to)),
    );
    let mut any = false;
    for s in series {
        let pts: Vec<(f64, f64)> = s
            .points
            .iter()
            .filter(|(t, v)| v.is_finite() && *t >= from && *t <= to)
            .map(|(t, v)| (x_of(*t), y_of(*v)))
            .collect();
        if pts.is_empty() {
            continue;
        }
        any = true;
        let mut d = String::new();
        for (i, (x, y)) in pts.iter().enumerate() {
            let _ = write!(d, "{}{x:.1},{y:.1}", if i == 0 { "M" } else { " L" });
        }
        if pts.len() == 1 {
            // A single sample: a dot instead of an invisible zero-length line.
            let (x, y) = pts[0];
            let _ = write!(
                svg,
                r#"<circle class="chart-dot {}" cx="{x:.1}" cy="{y:.1}" r="3"/>"#,
                s.class
            );
        } else {
            let base = TOP + plot_h;
            let (first_x, _) = pts[0];
            let (last_x, _) = pts[pts.len() - 1];
            let _ = write!(
                svg,
                r#"<path class="chart-area {}" d="{d} L{last_x:.1},{base:.1} L{first_x:.1},{base:.1} Z"/><path class="chart-line {}" d="{d}"/>"#,
                s.class, s.class
            );
        }
    }
    if !any {
        let _ = write!(
            svg,
            r#"<text class="chart-empty" x="{:.1}" y="{:.1}" text-anchor="middle">No data yet</text>"#,
            LEFT + plot_w / 2.0,
            TOP + plot_h / 2.0 + 4.0
        );
    }
    svg.push_str("</svg>");
    svg
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use chrono::Duration;

    fn t0() -> DateTime<Utc> {
        DateTime::parse_from_rfc3339("2026-11-25T08:00:00Z")
            .unwrap()
            .with_timezone(&Utc)
    }

    #[test]
    fn bytes_are_human_sized() {
        assert_eq!(format_bytes(0.0), "0 B");
        assert_eq!(format_bytes(1536.0), "1.5 KiB");
        assert_eq!(format_bytes(512.0 * 1024.0 * 1024.0), "512 MiB");
        assert_eq!(format_value(2048.0, Unit::BytesPerSec), "2.0 KiB/s");
        assert_eq!(format_value(42.4, Unit::Percent), "42%");
    }

    #[test]
    fn rates_skip_counter_resets() {
        let c = [
            (t0(), 1000),
            (t0() + Duration::seconds(10), 11_000),
            (t0() + Duration::seconds(20), 500), // rebooted
            (t0() + Duration::seconds(30), 1500),
        ];
        let r = rates(&c);
        assert_eq!(r.len(), 2);
        assert_eq!(r[0].1, 1000.0);
        assert_eq!(r[1].1, 100.0);
    }

    #[test]
    fn axis_maximum_is_round() {
        assert_eq!(nice_max(37.0, Unit::Percent), 100.0);
        assert_eq!(nice_max(3.0, Unit::Bytes), 5.0);
        assert_eq!(
            nice_max(300.0 * 1024.0 * 1024.0, Unit::Bytes),
            500.0 * 1024.0 * 1024.0
        );
        assert_eq!(nice_max(0.0, Unit::Bytes), 1.0);
    }

    #[test]
    fn chart_draws_a_line_inside_the_plot_and_escapes_the_title() {
        let s = Series {
            label: "CPU",
            class: "series-a",
            points: vec![
                (t0(), 0.0),
                (t0() + Duration::minutes(30), 50.0),
                (t0() + Duration::minutes(60), 100.0),
            ],
        };
        let svg = line_chart(
            "CPU <usage>",
            Unit::Percent,
            &[s],
            t0(),
            t0() + Duration::hours(1),
        );
        assert!(svg.starts_with("<svg class=\"chart\""));
        assert!(svg.contains("aria-label=\"CPU &lt;usage&gt;\""));
        assert!(!svg.contains("<usage>"));
        // First point at the left edge, bottom; last at the right edge, top.
        assert!(svg.contains(&format!("M{LEFT:.1},{:.1}", H - BOTTOM)));
        assert!(svg.contains(&format!("L{:.1},{TOP:.1}", W - RIGHT)));
        assert!(svg.contains("100%"));
        assert!(!svg.contains("No data yet"));
        assert!(!svg.contains("style"));
    }

    #[test]
    fn empty_chart_says_so() {
        let svg = line_chart("Memory", Unit::Bytes, &[], t0(), t0() + Duration::hours(1));
        assert!(svg.contains("No data yet"));
        assert!(svg.ends_with("</svg>"));
    }
}
