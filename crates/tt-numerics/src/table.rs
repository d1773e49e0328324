//! A preset printed as a table: one line per op class, `-` where a field does not apply, `*`
//! after an overridden value, and the source each line was taken from.

use std::fmt::{self, Write as _};

use crate::preset::{Field, OpClass, Preset};

impl fmt::Display for Preset {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "precision preset `{}`{}",
            self.name(),
            if self.is_overridden() {
                " (* = override)"
            } else {
                ""
            }
        )?;
        writeln!(
            f,
            "{:<12} {:<8} {:<9} {:<5} {:<7} source",
            "op", "weights", "fidelity", "acc", "output"
        )?;
        for op in OpClass::ALL {
            let s = self.get(op);
            let cell = |field: Field, value: String| {
                if !op.uses(field) {
                    "-".to_string()
                } else if s.is_overridden(field) {
                    format!("{value}*")
                } else {
                    value
                }
            };
            let mut line = String::new();
            let _ = write!(
                line,
                "{:<12} {:<8} {:<9} {:<5} {:<7} {}",
                op.name(),
                cell(Field::Weights, s.weights.to_string()),
                cell(Field::Fidelity, s.fidelity.to_string()),
                cell(Field::Accumulation, s.accumulation.to_string()),
                cell(Field::Output, s.output.to_string()),
                s.source
            );
            writeln!(f, "{}", line.trim_end())?;
        }
        Ok(())
    }
}

/// Every named preset, printed one after another.
pub fn all_presets_table() -> String {
    crate::preset::PresetName::ALL
        .iter()
        .map(|&n| Preset::named(n).to_string())
        .collect::<Vec<_>>()
        .join("\n")
}
