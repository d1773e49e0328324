//! The profile's figures (per kind, and the step as a whole, as means over the steps) and their
//! Markdown table.

use std::time::Duration;

use serde::Serialize;

use super::record::Tally;

/// What was profiled.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum Phase {
    /// Decode steps of one token.
    Decode,
    /// Prefills of the prompt.
    Prefill,
}

/// The run a report describes.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Meta {
    pub model: String,
    pub mesh: String,
    pub precision: String,
    pub phase: Phase,
    /// Prompt tokens (decode: the context the first step starts at).
    pub context: usize,
    /// Threads of the pool.
    pub threads: usize,
}

/// One kind's row.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct KindRow {
    pub kind: String,
    pub calls_per_step: f64,
    pub busy_ms_per_step: f64,
    pub percent_of_busy: f64,
}

/// The profile: per kind, and the step as a whole (means over the steps).
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Report {
    #[serde(flatten)]
    pub meta: Meta,
    pub steps: usize,
    pub step_wall_ms: Vec<f64>,
    /// Kinds by busy time, most first.
    pub kinds: Vec<KindRow>,
    pub wall_ms_per_step: f64,
    pub busy_ms_per_step: f64,
    /// busy / wall: how many threads were busy on average.
    pub busy_over_wall: f64,
    /// wall x threads - busy.
    pub untracked_ms_per_step: f64,
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

impl Report {
    /// The report of `totals` over the steps whose wall times are `walls`.
    pub fn new(meta: Meta, totals: &Tally, walls: &[Duration]) -> Self {
        let steps = walls.len().max(1) as f64;
        let busy: Duration = totals.iter().map(|(_, t)| t.busy).sum();
        let busy_ms = ms(busy) / steps;
        let wall_ms = walls.iter().copied().map(ms).sum::<f64>() / steps;
        let mut kinds: Vec<KindRow> = totals
            .iter()
            .map(|(kind, t)| KindRow {
                kind: kind.to_string(),
                calls_per_step: t.calls as f64 / steps,
                busy_ms_per_step: ms(t.busy) / steps,
                percent_of_busy: match busy.is_zero() {
                    true => 0.0,
                    false => 100.0 * t.busy.as_secs_f64() / busy.as_secs_f64(),
                },
            })
            .collect();
        kinds.sort_by(|a, b| {
            b.busy_ms_per_step
                .total_cmp(&a.busy_ms_per_step)
                .then_with(|| a.kind.cmp(&b.kind))
        });
        Self {
            untracked_ms_per_step: wall_ms * meta.threads as f64 - busy_ms,
            busy_over_wall: if wall_ms > 0.0 {
                busy_ms / wall_ms
            } else {
                0.0
            },
            meta,
            steps: walls.len(),
            step_wall_ms: walls.iter().copied().map(ms).collect(),
            kinds,
            wall_ms_per_step: wall_ms,
            busy_ms_per_step: busy_ms,
        }
    }

    /// The Markdown table, with a heading line and the step's totals under it.
    pub fn table(&self) -> String {
        use std::fmt::Write;
        let m = &self.meta;
        let what = match m.phase {
            Phase::Decode => format!(
                "{} decode steps after a {}-token prompt",
                self.steps, m.context
            ),
            Phase::Prefill => format!("{} prefills of {} tokens", self.steps, m.context),
        };
        let mut out = format!(
            "Profile of {what}: {} on {}, precision {}, {} threads.\n\n",
            m.model, m.mesh, m.precision, m.threads
        );
        out.push_str("| op kind | calls/step | busy ms/step | % of busy |\n");
        out.push_str("|---|---:|---:|---:|\n");
        for k in &self.kinds {
            let _ = writeln!(
                out,
                "| {} | {} | {:.2} | {:.1} |",
                k.kind,
                fmt_calls(k.calls_per_step),
                k.busy_ms_per_step,
                k.percent_of_busy
            );
        }
        let _ = writeln!(
            out,
            "| **busy, all kinds** | | **{:.2}** | 100.0 |",
            self.busy_ms_per_step
        );
        let (lo, hi) = self
            .step_wall_ms
            .iter()
            .fold((f64::INFINITY, 0.0f64), |(lo, hi), &w| {
                (lo.min(w), hi.max(w))
            });
        let capacity = self.wall_ms_per_step * m.threads as f64;
        let _ = write!(
            out,
            "\nStep wall: {:.2} ms (mean of {}; min {lo:.2}, max {hi:.2}). \
             Busy/wall: {:.2} of {} threads. \
             Untracked (wall x threads - busy): {:.2} ms/step, {:.1}% of wall x threads.\n",
            self.wall_ms_per_step,
            self.steps,
            self.busy_over_wall,
            m.threads,
            self.untracked_ms_per_step,
            match capacity > 0.0 {
                true => 100.0 * self.untracked_ms_per_step / capacity,
                false => 0.0,
            }
        );
        out
    }
}

/// Calls per step: an integer when whole.
fn fmt_calls(calls: f64) -> String {
    match calls.fract() == 0.0 {
        true => format!("{calls:.0}"),
        false => format!("{calls:.2}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    fn fixed_report() -> Report {
        let mut tally = Tally::default();
        for (kind, calls, busy_ms) in [
            ("gate_up", 64, 120),
            ("down", 64, 60),
            ("qkv", 64, 45),
            ("attention", 64, 12),
            ("all_reduce", 128, 6),
            ("sample", 2, 1),
        ] {
            for _ in 0..calls {
                tally.call(kind);
            }
            tally.busy(kind, MS * busy_ms);
        }
        let meta = Meta {
            model: "synth".into(),
            mesh: "2x4".into(),
            precision: "accuracy".into(),
            phase: Phase::Decode,
            context: 155,
            threads: 2,
        };
        Report::new(meta, &tally, &[MS * 120, MS * 125])
    }

    #[test]
    fn report_sums_and_ranks_the_kinds() {
        let r = fixed_report();
        assert_eq!(r.steps, 2);
        assert_eq!(r.kinds[0].kind, "gate_up");
        assert!((r.kinds[0].calls_per_step - 32.0).abs() < 1e-9);
        assert!((r.busy_ms_per_step - 122.0).abs() < 1e-9);
        assert!((r.wall_ms_per_step - 122.5).abs() < 1e-9);
        assert!((r.untracked_ms_per_step - (245.0 - 122.0)).abs() < 1e-9);
        let percent: f64 = r.kinds.iter().map(|k| k.percent_of_busy).sum();
        assert!((percent - 100.0).abs() < 1e-9);
    }

    #[test]
    fn table_snapshot() {
        insta::assert_snapshot!(fixed_report().table());
    }
}
