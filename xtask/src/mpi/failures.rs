//! The failure checks: a rank killed mid-decode, and a rank that fails to load, must each end
//! the whole job with an error naming that rank within seconds.

use std::path::Path;
use std::time::{Duration, Instant};

use super::fixtures::{Fixture, ids_arg, model_args, model_args_at, prompt_ids};
use super::process::{Running, find_rank, kill, mpirun, run_cmd};
use super::{Binaries, Row, row};

/// A job ended by a failing or killed rank must end within this many seconds.
const FAILURE_LIMIT_S: f64 = 10.0;

/// The first stderr line naming `rank`.
fn line_naming(stderr: &str, rank: usize) -> Option<String> {
    let needle = format!("rank {rank}");
    stderr
        .lines()
        .find(|l| {
            l.match_indices(&needle).any(|(i, _)| {
                !l[i + needle.len()..]
                    .chars()
                    .next()
                    .is_some_and(|c| c.is_ascii_digit())
            })
        })
        .map(|l| l.trim().to_string())
}

/// `mpirun -n 2 tt-lm generate` with a long decode; rank 1 is SIGKILLed once decoding has begun.
/// Passes when mpirun fails within 10 s of the kill with an error naming rank 1.
pub(super) fn kill_check(
    bins: &Binaries,
    f: &Fixture,
    limit: Duration,
    notes: &mut Vec<String>,
) -> Row {
    let check = "rank 1 killed mid-decode";
    let prompt = 8;
    let new_tokens = f.max_positions.saturating_sub(prompt + 1).min(10_000);
    let mut args = vec!["generate".to_string()];
    args.extend(model_args(f, "f32"));
    args.extend([
        "--prompt-ids".into(),
        ids_arg(&prompt_ids(prompt, f.vocab)),
        "--max-new-tokens".into(),
        new_tokens.to_string(),
        "--min-new-tokens".into(),
        new_tokens.to_string(),
    ]);
    let fail = |notes: &mut Vec<String>, why: String| {
        notes.push(format!("{check} ({}): {why}", f.name));
        row(check, &f.name, "f32", "2", false, why)
    };
    let mut job = match Running::spawn(&mut mpirun(&[(2, &bins.tt_lm, args)])) {
        Ok(j) => j,
        Err(e) => return fail(notes, format!("{e:#}")),
    };
    // Decoding has begun once rank 0 streams tokens (text, or ids at the end without a
    // tokenizer); then let it decode a little longer.
    let started = Instant::now();
    let streamed = loop {
        if !job.running() {
            break false;
        }
        if job.stdout_len() > 0 {
            std::thread::sleep(Duration::from_secs(1));
            break job.running();
        }
        if started.elapsed() > Duration::from_secs(120) {
            break false;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    if !streamed {
        let out = job.wait(Duration::from_secs(5));
        return fail(notes, format!("decoding never began: {}", out.describe()));
    }
    let launcher = job.pid();
    let victim = (0..250).find_map(|_| {
        find_rank(launcher, 1, "tt-lm").or_else(|| {
            std::thread::sleep(Duration::from_millis(20));
            None
        })
    });
    let Some(victim) = victim else {
        let out = job.wait(Duration::ZERO);
        return fail(
            notes,
            format!("rank 1 not found under mpirun: {}", out.describe()),
        );
    };
    let Ok(victim_pid) = i32::try_from(victim) else {
        return fail(notes, format!("pid {victim} out of range"));
    };
    let streamed_bytes = job.stdout_len();
    let killed = Instant::now();
    kill(victim_pid);
    let out = job.wait(limit);
    let after = out.ended.duration_since(killed).as_secs_f64();
    let named = line_naming(&out.stderr, 1);
    let ok = !out.success() && !out.timed_out && named.is_some() && after < FAILURE_LIMIT_S;
    notes.push(format!(
        "{check} ({}, pid {victim}, after {streamed_bytes} B of streamed text): mpirun exited \
         {} {after:.2} s after the kill; stderr: {}",
        f.name,
        out.status.map_or("(killed)".to_string(), |s| s.to_string()),
        named.as_deref().unwrap_or("(names no rank 1)")
    ));
    if !ok {
        notes.push(format!("  {}", out.describe()));
    }
    row(
        check,
        &f.name,
        "f32",
        "2",
        ok,
        format!("job ended {after:.2} s after SIGKILL"),
    )
}

/// An MPMD launch whose rank 1 is given a checkpoint that does not exist: mpirun must fail
/// within 10 s with an error naming rank 1.
pub(super) fn load_failure_check(
    bins: &Binaries,
    f: &Fixture,
    limit: Duration,
    notes: &mut Vec<String>,
) -> Row {
    let check = "rank 1 fails to load";
    let args = |model: &Path| {
        let mut a = vec!["generate".to_string()];
        a.extend(model_args_at(model, "f32"));
        a.extend([
            "--prompt-ids".into(),
            ids_arg(&prompt_ids(8, f.vocab)),
            "--max-new-tokens".into(),
            "8".into(),
        ]);
        a
    };
    let missing = f.dir.with_file_name("no-such-checkpoint");
    let good = f.dir.as_path();
    let cmd = &mut mpirun(&[
        (1, &bins.tt_lm, args(good)),
        (1, &bins.tt_lm, args(&missing)),
    ]);
    let out = match run_cmd(cmd, limit) {
        Ok(o) => o,
        Err(e) => {
            notes.push(format!("{check}: {e:#}"));
            return row(check, &f.name, "f32", "1+1", false, e.to_string());
        }
    };
    let named = line_naming(&out.stderr, 1);
    let ok = !out.success() && !out.timed_out && named.is_some() && out.seconds < FAILURE_LIMIT_S;
    notes.push(format!(
        "{check} ({} on rank 0, a missing checkpoint on rank 1): mpirun exited {} after \
         {:.2} s; stderr: {}",
        f.name,
        out.status.map_or("(killed)".to_string(), |s| s.to_string()),
        out.seconds,
        named.as_deref().unwrap_or("(names no rank 1)")
    ));
    if !ok {
        notes.push(format!("  {}", out.describe()));
    }
    row(
        check,
        &f.name,
        "f32",
        "1+1",
        ok,
        format!("job ended after {:.2} s", out.seconds),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_naming_finds_rank_1_but_not_rank_10() {
        let err = "rank 10: no\nmpirun noticed that process rank 1 with PID 7 on node x \
                   exited on signal 9 (Killed).\n";
        assert!(line_naming(err, 1).is_some_and(|l| l.contains("PID 7")));
        assert_eq!(line_naming("rank 10: x\n", 1), None);
        assert!(line_naming("rank 1: error: no such dir", 1).is_some());
    }
}
