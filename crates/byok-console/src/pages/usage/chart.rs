//! The daily bar chart's geometry: stacked bars (own key, platform key, errors) in an SVG
//! view box, a rounded scale, and a few axis labels. Pure arithmetic, rendered by the
//! template with attributes and classes only (the CSP allows no inline style).

/// One day as the chart draws it: three stacked counts, the axis label and the tooltip.
#[derive(Debug, Clone, Default)]
pub struct Stack {
    /// Own-key requests that did not fail (bottom).
    pub own: u64,
    /// Platform-key requests that did not fail.
    pub platform: u64,
    /// Failed requests of either key (top).
    pub errors: u64,
    /// `Nov 3`
    pub label: String,
    pub tip: String,
}

impl Stack {
    fn total(&self) -> u64 {
        self.own
            .saturating_add(self.platform)
            .saturating_add(self.errors)
    }
}

/// The view box (the SVG scales to its container's width).
/// The labels are sized in its units: small on a wide screen, large on a narrow one (the
/// stylesheet), so the margins leave room for the large size.
pub const WIDTH: f32 = 720.0;
pub const HEIGHT: f32 = 236.0;
const LEFT: f32 = 72.0;
const RIGHT: f32 = 712.0;
const TOP: f32 = 16.0;
/// The base line (y of zero).
pub const BASE: f32 = 196.0;
/// The x labels hang below the base line from here.
const X_LABEL_Y: f32 = 204.0;
/// The share of a day's slot its bar takes.
const BAR_SHARE: f32 = 0.7;

/// One rectangle of a bar.
#[derive(Debug, Clone, PartialEq)]
pub struct Segment {
    /// `bar-own`, `bar-platform` or `bar-errors`.
    pub class: &'static str,
    pub y: f32,
    pub height: f32,
}

/// One day's stacked bar.
#[derive(Debug, Clone)]
pub struct Bar {
    pub x: f32,
    pub width: f32,
    pub segments: Vec<Segment>,
    /// Shown on hover (`<title>`).
    pub tip: String,
}

/// A label on an axis (and, on the y axis, its grid line).
#[derive(Debug, Clone)]
pub struct Tick {
    pub x: f32,
    pub y: f32,
    pub text: String,
    /// `text-anchor`: `middle`, or `end` for the last day (kept inside the view box).
    pub anchor: &'static str,
}

/// Everything the template draws.
#[derive(Debug, Clone)]
pub struct Chart {
    pub width: f32,
    pub height: f32,
    pub left: f32,
    pub right: f32,
    pub base: f32,
    pub bars: Vec<Bar>,
    pub y_ticks: Vec<Tick>,
    pub x_ticks: Vec<Tick>,
}

/// One decimal is enough for a 720-unit view box (and keeps the page small).
fn round(v: f32) -> f32 {
    (v * 10.0).round() / 10.0
}

/// The smallest of 1, 2, 3, 4, 5, 6, 8 × 10ⁿ at or above `max` (at least 1): the tallest
/// bar fills most of the height, and the scale reads as a round number.
pub fn nice_max(max: u64) -> u64 {
    let mut step = 1u64;
    loop {
        for m in [1, 2, 3, 4, 5, 6, 8] {
            let v = step.saturating_mul(m);
            if v >= max {
                return v;
            }
        }
        if step > u64::MAX / 10 {
            return u64::MAX;
        }
        step *= 10;
    }
}

/// An axis number, short: `950`, `2.5k`, `40k`, `1.2M`.
pub fn compact(n: u64) -> String {
    let short = |v: f64, unit: &str| {
        let text = if v < 10.0 {
            format!("{v:.1}")
        } else {
            format!("{v:.0}")
        };
        format!("{}{unit}", text.trim_end_matches(".0"))
    };
    match n {
        0..1_000 => n.to_string(),
        1_000..1_000_000 => short(n as f64 / 1e3, "k"),
        1_000_000..1_000_000_000 => short(n as f64 / 1e6, "M"),
        _ => short(n as f64 / 1e9, "G"),
    }
}

/// The chart of `days` (oldest first).
pub fn chart(days: &[Stack]) -> Chart {
    let top = nice_max(days.iter().map(Stack::total).max().unwrap_or(0));
    let plot = BASE - TOP;
    let slot = (RIGHT - LEFT) / days.len().max(1) as f32;
    let width = round(slot * BAR_SHARE);
    let scale = |v: u64| v as f32 / top as f32 * plot;
    let bars = days
        .iter()
        .enumerate()
        .map(|(i, d)| {
            let x = round(LEFT + slot * i as f32 + (slot - slot * BAR_SHARE) / 2.0);
            let mut y = BASE;
            let mut segments = Vec::new();
            for (class, v) in [
                ("bar-own", d.own),
                ("bar-platform", d.platform),
                ("bar-errors", d.errors),
            ] {
                if v == 0 {
                    continue;
                }
                // At least half a unit, so a single request stays visible beside thousands.
                let h = scale(v).max(0.5);
                y -= h;
                segments.push(Segment {
                    class,
                    y: round(y),
                    height: round(h),
                });
            }
            Bar {
                x,
                width,
                segments,
                tip: d.tip.clone(),
            }
        })
        .collect();
    let mut levels = vec![0, top / 2, top];
    levels.dedup();
    let y_ticks = levels
        .into_iter()
        .map(|v| Tick {
            x: LEFT - 6.0,
            y: round(BASE - scale(v)),
            text: compact(v),
            anchor: "end",
        })
        .collect();
    // Every seventh day, counted back from today, so the last bar is labelled.
    let last = days.len().saturating_sub(1);
    let x_ticks = days
        .iter()
        .enumerate()
        .filter(|(i, _)| (last - i).is_multiple_of(7))
        .map(|(i, d)| {
            let (x, anchor) = if i == last {
                (RIGHT, "end")
            } else {
                (round(LEFT + slot * i as f32 + slot / 2.0), "middle")
            };
            Tick {
                x,
                y: X_LABEL_Y,
                text: d.label.clone(),
                anchor,
            }
        })
        .collect();
    Chart {
        width: WIDTH,
        height: HEIGHT,
        left: LEFT,
        right: RIGHT,
        base: BASE,
        bars,
        y_ticks,
        x_ticks,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn axis_numbers_are_short() {
        assert_eq!(compact(0), "0");
        assert_eq!(compact(950), "950");
        assert_eq!(compact(1000), "1k");
        assert_eq!(compact(2500), "2.5k");
        assert_eq!(compact(40_000), "40k");
        assert_eq!(compact(1_200_000), "1.2M");
        assert_eq!(compact(3_000_000_000), "3G");
    }

    #[test]
    fn the_scale_rounds_up_to_a_round_number() {
        assert_eq!(nice_max(0), 1);
        assert_eq!(nice_max(1), 1);
        assert_eq!(nice_max(3), 3);
        assert_eq!(nice_max(7), 8);
        assert_eq!(nice_max(9), 10);
        assert_eq!(nice_max(11), 20);
        assert_eq!(nice_max(150), 200);
        assert_eq!(nice_max(3324), 4000);
        assert_eq!(nice_max(8001), 10_000);
        assert_eq!(nice_max(u64::MAX), u64::MAX);
    }
}
