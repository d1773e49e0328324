//! The CPU the benchmark ran on, as `/proc/cpuinfo` names it: its model name and which of the
//! instruction-set extensions the matrix kernels care about it has.

use serde::Serialize;

/// The `/proc/cpuinfo` flags the kernels' paths depend on, in the order the report lists them.
pub const KERNEL_ISA: [&str; 6] = [
    "avx2",
    "fma",
    "avx512f",
    "avx512_bf16",
    "amx_bf16",
    "amx_tile",
];

/// The CPU of the run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Cpu {
    /// `model name` of the first processor (`unknown` when not reported).
    pub model: String,
    /// The [`KERNEL_ISA`] flags it has.
    pub isa: Vec<String>,
    /// The [`KERNEL_ISA`] flags it lacks.
    pub isa_absent: Vec<String>,
}

impl Cpu {
    /// This machine's CPU (`unknown`, no flags, when `/proc/cpuinfo` cannot be read).
    pub fn this_machine() -> Self {
        Self::from_cpuinfo(&std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default())
    }

    /// Parses the text of `/proc/cpuinfo` (the first processor's `model name` and `flags`).
    pub fn from_cpuinfo(text: &str) -> Self {
        let field = |name: &str| {
            text.lines().find_map(|line| {
                let (key, value) = line.split_once(':')?;
                (key.trim() == name).then(|| value.trim().to_string())
            })
        };
        let model = field("model name")
            .filter(|m| !m.is_empty())
            .unwrap_or_else(|| "unknown".to_string());
        let flags = field("flags").unwrap_or_default();
        let has = |isa: &str| flags.split_whitespace().any(|f| f == isa);
        let (isa, isa_absent): (Vec<&str>, Vec<&str>) = KERNEL_ISA.iter().partition(|f| has(f));
        Self {
            model,
            isa: isa.into_iter().map(String::from).collect(),
            isa_absent: isa_absent.into_iter().map(String::from).collect(),
        }
    }

    /// One footer line: `CPU: <model>; kernel ISA: avx2 fma (absent: avx512f ...)`.
    pub fn line(&self) -> String {
        let list = |v: &[String]| match v.is_empty() {
            true => "none".to_string(),
            false => v.join(" "),
        };
        format!(
            "CPU: {}; kernel ISA extensions: {} (absent: {})\n",
            self.model,
            list(&self.isa),
            list(&self.isa_absent)
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const EPYC: &str = "processor\t: 0\nvendor_id\t: AuthenticAMD\nmodel name\t: AMD EPYC 7B13\n\
        flags\t\t: fpu sse2 avx fma avx2 bmi2 sha_ni\n\nprocessor\t: 1\nmodel name\t: other\n\
        flags\t\t: avx512f\n";

    #[test]
    fn reads_the_first_processor() {
        let cpu = Cpu::from_cpuinfo(EPYC);
        assert_eq!(cpu.model, "AMD EPYC 7B13");
        assert_eq!(cpu.isa, ["avx2", "fma"]);
        assert_eq!(
            cpu.isa_absent,
            ["avx512f", "avx512_bf16", "amx_bf16", "amx_tile"]
        );
        assert_eq!(
            cpu.line(),
            "CPU: AMD EPYC 7B13; kernel ISA extensions: avx2 fma (absent: avx512f avx512_bf16 amx_bf16 amx_tile)\n"
        );
    }

    #[test]
    fn whole_flags_only_and_amx() {
        let text =
            "model name : Intel Xeon\nflags : avx512f avx512_bf16x amx_bf16 amx_tile avx2x\n";
        let cpu = Cpu::from_cpuinfo(text);
        assert_eq!(cpu.isa, ["avx512f", "amx_bf16", "amx_tile"]);
        assert_eq!(cpu.isa_absent, ["avx2", "fma", "avx512_bf16"]);
        let empty = Cpu::from_cpuinfo("");
        assert_eq!(empty.model, "unknown");
        assert!(empty.isa.is_empty());
        assert!(empty.line().contains("extensions: none (absent: avx2"));
    }
}
