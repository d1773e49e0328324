//! Processes of the MPI tests: commands run with a time limit and their output collected,
//! `mpirun` command lines, killing a process with everything it started, and finding a rank's
//! pid in /proc.

use std::ffi::OsStr;
use std::io::Read;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};

/// Options of every `mpirun`.
const MPIRUN_OPTIONS: &[&str] = &[
    "--oversubscribe",
    "--bind-to",
    "none",
    "--mca",
    "btl_vader_single_copy_mechanism",
    "none",
];

/// The launcher environment a process started on its own must not inherit.
const LAUNCHER_ENV: &[&str] = &["OMPI_COMM_WORLD_SIZE", "PMIX_SIZE", "PMI_SIZE"];

/// What a finished command did.
#[derive(Debug)]
pub(super) struct Outcome {
    pub(super) status: Option<ExitStatus>,
    pub(super) stdout: String,
    pub(super) stderr: String,
    /// Seconds from start to exit.
    pub(super) seconds: f64,
    /// When it exited (or was killed).
    pub(super) ended: Instant,
    pub(super) timed_out: bool,
}

impl Outcome {
    pub(super) fn success(&self) -> bool {
        self.status.is_some_and(|s| s.success())
    }

    /// Exit status and the last lines of stderr, for a failure note.
    pub(super) fn describe(&self) -> String {
        let status = match (self.timed_out, self.status) {
            (true, _) => "killed after the timeout".to_string(),
            (false, Some(s)) => s.to_string(),
            (false, None) => "no exit status".to_string(),
        };
        let lines: Vec<&str> = self.stderr.lines().collect();
        let tail = lines[lines.len().saturating_sub(12)..].join("\n    ");
        format!("{status}; stderr:\n    {tail}")
    }
}

/// A started command whose output is being collected.
pub(super) struct Running {
    child: Child,
    stdout: Arc<Mutex<Vec<u8>>>,
    stderr: Arc<Mutex<Vec<u8>>>,
    readers: Vec<JoinHandle<()>>,
    start: Instant,
}

fn collect(mut from: impl Read + Send + 'static, into: Arc<Mutex<Vec<u8>>>) -> JoinHandle<()> {
    std::thread::spawn(move || {
        let mut buf = [0u8; 8192];
        while let Ok(n) = from.read(&mut buf) {
            if n == 0 {
                break;
            }
            if let Ok(mut v) = into.lock() {
                v.extend_from_slice(&buf[..n]);
            }
        }
    })
}

impl Running {
    /// Starts `cmd` in a process group of its own, collecting stdout and stderr.
    pub(super) fn spawn(cmd: &mut Command) -> Result<Self> {
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0)
            .spawn()
            .with_context(|| format!("starting {cmd:?}"))?;
        let (stdout, stderr) = (Arc::default(), Arc::default());
        let mut readers = Vec::new();
        if let Some(out) = child.stdout.take() {
            readers.push(collect(out, Arc::clone(&stdout)));
        }
        if let Some(err) = child.stderr.take() {
            readers.push(collect(err, Arc::clone(&stderr)));
        }
        Ok(Self {
            child,
            stdout,
            stderr,
            readers,
            start: Instant::now(),
        })
    }

    pub(super) fn pid(&self) -> u32 {
        self.child.id()
    }

    pub(super) fn stdout_len(&self) -> usize {
        self.stdout.lock().map_or(0, |v| v.len())
    }

    /// Whether it is still running.
    pub(super) fn running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// Waits for the exit, at most `limit` from now; then kills it and everything it started.
    pub(super) fn wait(mut self, limit: Duration) -> Outcome {
        let deadline = Instant::now() + limit;
        let mut timed_out = false;
        let status = loop {
            match self.child.try_wait() {
                Ok(Some(s)) => break Some(s),
                Ok(None) if Instant::now() >= deadline => {
                    timed_out = true;
                    kill_tree(self.pid());
                    break self.child.wait().ok();
                }
                Ok(None) => std::thread::sleep(Duration::from_millis(10)),
                Err(_) => break None,
            }
        };
        let ended = Instant::now();
        for r in self.readers.drain(..) {
            let _ = r.join();
        }
        let text = |b: &Arc<Mutex<Vec<u8>>>| {
            b.lock()
                .map(|v| String::from_utf8_lossy(&v).into_owned())
                .unwrap_or_default()
        };
        Outcome {
            status,
            stdout: text(&self.stdout),
            stderr: text(&self.stderr),
            seconds: ended.duration_since(self.start).as_secs_f64(),
            ended,
            timed_out,
        }
    }
}

/// `cmd` run to the end, killed after `limit`.
pub(super) fn run_cmd(cmd: &mut Command, limit: Duration) -> Result<Outcome> {
    Ok(Running::spawn(cmd)?.wait(limit))
}

/// `program args` in one process (not taking the launcher environment of this one, if any).
pub(super) fn single(program: &Path, args: &[String]) -> Command {
    let mut cmd = Command::new(program);
    cmd.args(args);
    for k in LAUNCHER_ENV {
        cmd.env_remove(k);
    }
    cmd
}

/// `mpirun` of the applications `apps` (`(ranks, program, args)`; several make an MPMD launch).
pub(crate) fn mpirun(apps: &[(usize, &Path, Vec<String>)]) -> Command {
    let mut cmd = Command::new("mpirun");
    cmd.args(MPIRUN_OPTIONS)
        .env("OMPI_ALLOW_RUN_AS_ROOT", "1")
        .env("OMPI_ALLOW_RUN_AS_ROOT_CONFIRM", "1");
    for (i, (n, program, args)) in apps.iter().enumerate() {
        if i > 0 {
            cmd.arg(":");
        }
        cmd.arg("-n").arg(n.to_string()).arg(program).args(args);
    }
    cmd
}

/// Sends SIGKILL to `pid`.
pub(super) fn kill(pid: i32) {
    // SAFETY: kill(2) takes two integers and touches no memory of this process.
    unsafe {
        libc::kill(pid, libc::SIGKILL);
    }
}

/// Kills `pid`, its process group and every descendant (ranks started by mpirun may sit in
/// process groups of their own).
fn kill_tree(pid: u32) {
    let procs = processes();
    let tree = descendants(&procs, pid);
    let Ok(pid) = i32::try_from(pid) else {
        return;
    };
    kill(-pid);
    kill(pid);
    for p in tree {
        if let Ok(p) = i32::try_from(p) {
            kill(p);
        }
    }
}

/// Every process as `(pid, parent pid)`, from /proc.
fn processes() -> Vec<(u32, u32)> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(|e| {
            let pid: u32 = e.ok()?.file_name().to_str()?.parse().ok()?;
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
            Some((pid, stat_parent(&stat)?))
        })
        .collect()
}

/// The parent pid in a /proc/PID/stat line (`pid (comm) state ppid ...`; comm may hold spaces
/// and parentheses, so fields are counted after the last `)`).
fn stat_parent(stat: &str) -> Option<u32> {
    let rest = &stat[stat.rfind(')')? + 1..];
    rest.split_whitespace().nth(1)?.parse().ok()
}

/// Every descendant of `root` in `procs`.
fn descendants(procs: &[(u32, u32)], root: u32) -> Vec<u32> {
    let mut out = Vec::new();
    let mut frontier = vec![root];
    while let Some(p) = frontier.pop() {
        for &(child, parent) in procs {
            if parent == p && !out.contains(&child) && child != root {
                out.push(child);
                frontier.push(child);
            }
        }
    }
    out
}

/// The MPI world rank in a /proc/PID/environ block (NUL-separated `KEY=VALUE`).
fn environ_rank(environ: &[u8]) -> Option<usize> {
    environ
        .split(|&b| b == 0)
        .filter_map(|kv| std::str::from_utf8(kv).ok())
        .find_map(|kv| {
            let v = kv
                .strip_prefix("OMPI_COMM_WORLD_RANK=")
                .or_else(|| kv.strip_prefix("PMIX_RANK="))?;
            v.trim().parse().ok()
        })
}

/// The pid of world rank `rank` among the descendants of `launcher` that run `program_name`.
pub(super) fn find_rank(launcher: u32, rank: usize, program_name: &str) -> Option<u32> {
    descendants(&processes(), launcher).into_iter().find(|pid| {
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        let program = cmdline.split(|&b| b == 0).next().unwrap_or_default();
        let runs_it = Path::new(OsStr::from_bytes(program))
            .file_name()
            .is_some_and(|n| n == program_name);
        let environ = std::fs::read(format!("/proc/{pid}/environ")).unwrap_or_default();
        runs_it && environ_rank(&environ) == Some(rank)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_parent_counts_fields_after_the_command_name() {
        assert_eq!(stat_parent("4242 (tt-lm) S 17 4242 4242 0 -1"), Some(17));
        assert_eq!(stat_parent("9 (a) b (c)) R 3 9 9"), Some(3));
        assert_eq!(stat_parent("garbage"), None);
    }

    #[test]
    fn descendants_walk_the_whole_tree() {
        let procs = [(1, 0), (10, 1), (11, 10), (12, 11), (13, 1), (20, 2)];
        let mut d = descendants(&procs, 10);
        d.sort_unstable();
        assert_eq!(d, vec![11, 12]);
        assert!(descendants(&procs, 12).is_empty());
    }

    #[test]
    fn environ_rank_reads_open_mpi_and_pmix() {
        assert_eq!(environ_rank(b"A=1\0OMPI_COMM_WORLD_RANK=1\0B=2\0"), Some(1));
        assert_eq!(environ_rank(b"PMIX_RANK=3\0"), Some(3));
        assert_eq!(environ_rank(b"OMPI_COMM_WORLD_SIZE=2\0"), None);
    }
    #[test]
    fn mpirun_commands_carry_the_options_and_mpmd_separators() {
        let p = Path::new("/bin/true");
        let cmd = mpirun(&[(1, p, vec!["a".into()]), (1, p, vec!["b".into()])]);
        let args: Vec<String> = cmd.get_args().map(|a| a.to_string_lossy().into()).collect();
        assert!(
            args.starts_with(
                &MPIRUN_OPTIONS
                    .iter()
                    .map(|s| s.to_string())
                    .collect::<Vec<_>>()
            )
        );
        let tail = &args[MPIRUN_OPTIONS.len()..];
        assert_eq!(
            tail,
            [
                "-n",
                "1",
                "/bin/true",
                "a",
                ":",
                "-n",
                "1",
                "/bin/true",
                "b"
            ]
        );
    }

    #[test]
    fn a_command_past_its_limit_is_killed() {
        let out = run_cmd(
            Command::new("sh").args(["-c", "echo hi; sleep 30"]),
            Duration::from_millis(300),
        )
        .unwrap();
        assert!(out.timed_out && !out.success());
        assert_eq!(out.stdout, "hi\n");
        assert!(out.seconds < 10.0);
    }
}
