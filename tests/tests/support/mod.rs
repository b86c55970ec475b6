//! Shared by the tests that drive the real `magnetar` binary (interop, hostile_binary,
//! crash_binary): finding/building the binary, network namespaces, child processes
//! with captured logs, `magnetar export`, and RSS from /proc.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

/// The workspace root.
pub fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

/// The `magnetar` binary of this build profile, built once per test process with
/// `cargo build -p magnetar --bin magnetar` (a no-op when `cargo test --workspace`
/// already built it). It sits next to this test's `deps/` directory.
pub fn magnetar_bin() -> PathBuf {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        let exe = std::env::current_exe().unwrap();
        let profile_dir = exe.parent().unwrap().parent().unwrap().to_path_buf();
        let release = profile_dir.file_name().is_some_and(|n| n == "release");
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let mut cmd = Command::new(cargo);
        cmd.current_dir(workspace())
            .args(["build", "-p", "magnetar", "--bin", "magnetar"]);
        if release {
            cmd.arg("--release");
        }
        let st = cmd.status().expect("run cargo build -p magnetar");
        assert!(st.success(), "cargo build -p magnetar failed");
        let bin = profile_dir.join("magnetar");
        assert!(bin.exists(), "no magnetar binary at {}", bin.display());
        bin
    })
    .clone()
}

/// Polls `cond` every 50 ms until it holds or `timeout` passes.
pub fn wait_until(timeout: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let end = Instant::now() + timeout;
    loop {
        if cond() {
            return true;
        }
        if Instant::now() >= end {
            return false;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn run(cmd: &mut Command) -> Result<String, String> {
    let out = cmd.output().map_err(|e| format!("{cmd:?}: {e}"))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(format!(
            "{cmd:?} exited {}: {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// A network namespace with only `lo` up, deleted on drop. Panics with a clear
/// message when `ip netns` is unavailable (the tests need root and iproute2).
pub struct Netns {
    pub name: String,
}

impl Netns {
    pub fn new(tag: &str) -> Netns {
        let name = format!("magnetar-{tag}-{}", std::process::id());
        // A leftover from a crashed earlier run with the same pid.
        let _ = run(Command::new("ip").args(["netns", "del", &name]));
        if let Err(e) = run(Command::new("ip").args(["netns", "add", &name])) {
            panic!(
                "this test needs a network namespace (root and iproute2's `ip netns`), \
                 and `ip netns add {name}` failed: {e}"
            );
        }
        let ns = Netns { name };
        run(Command::new("ip").args(["netns", "exec", &ns.name, "ip", "link", "set", "lo", "up"]))
            .unwrap_or_else(|e| panic!("bringing lo up in {}: {e}", ns.name));
        ns
    }

    /// A command that runs `program` inside the namespace.
    pub fn command(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.name]).arg(program);
        c
    }

    /// Pids of every process still inside the namespace.
    pub fn pids(&self) -> Vec<u32> {
        run(Command::new("ip").args(["netns", "pids", &self.name]))
            .unwrap_or_default()
            .split_whitespace()
            .filter_map(|p| p.parse().ok())
            .collect()
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        // Only processes this test started live here; end them by pid.
        for pid in self.pids() {
            let _ = Command::new("kill")
                .args(["-KILL", &pid.to_string()])
                .status();
        }
        let _ = run(Command::new("ip").args(["netns", "del", &self.name]));
    }
}

/// A child process with its stdout and stderr collected into one log.
pub struct Proc {
    pub child: Child,
    pub log: Arc<Mutex<String>>,
    pub what: String,
}

impl Proc {
    /// Spawns `cmd` with piped stdout/stderr (stdin null unless set already).
    pub fn spawn(what: &str, mut cmd: Command) -> Proc {
        let mut child = cmd
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {what}: {e}"));
        let log = Arc::new(Mutex::new(String::new()));
        for pipe in [
            Box::new(child.stderr.take().unwrap()) as Box<dyn Read + Send>,
            Box::new(child.stdout.take().unwrap()),
        ] {
            let log = log.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(pipe).lines() {
                    let Ok(line) = line else { return };
                    let mut l = log.lock().unwrap();
                    // Bounded: a chatty child cannot grow the test without limit.
                    if l.len() < 4 << 20 {
                        l.push_str(&line);
                        l.push('\n');
                    }
                }
            });
        }
        Proc {
            child,
            log,
            what: what.into(),
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn log(&self) -> String {
        self.log.lock().unwrap().clone()
    }

    /// The last `n` lines of the log.
    pub fn tail(&self, n: usize) -> String {
        let l = self.log();
        let lines: Vec<&str> = l.lines().collect();
        lines[lines.len().saturating_sub(n)..].join("\n")
    }

    /// Still running?
    pub fn alive(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// SIGKILL and reap.
    pub fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGTERM, then wait up to `timeout` for a clean exit (SIGKILL after that).
    /// Returns the exit status when it exited by itself.
    pub fn terminate(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        if let Ok(Some(st)) = self.child.try_wait() {
            return Some(st);
        }
        let _ = Command::new("kill")
            .args(["-TERM", &self.pid().to_string()])
            .status();
        let end = Instant::now() + timeout;
        while Instant::now() < end {
            if let Ok(Some(st)) = self.child.try_wait() {
                return Some(st);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        self.kill9();
        None
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            self.kill9();
        }
    }
}

/// `magnetar crawl --db DB ARGS…`, optionally inside a namespace.
pub fn crawl(ns: Option<&Netns>, db: &Path, args: &[String]) -> Proc {
    let bin = magnetar_bin();
    let mut cmd = match ns {
        Some(ns) => ns.command(&bin),
        None => Command::new(&bin),
    };
    cmd.arg("crawl")
        .arg("--db")
        .arg(db)
        .args(args)
        .env("RUST_LOG", "info")
        .stdin(Stdio::null());
    Proc::spawn("magnetar crawl", cmd)
}

/// One torrent as `magnetar export --format jsonl` prints it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Exported {
    pub infohash: String,
    pub name: String,
    pub size: u64,
    pub files: usize,
}

/// `magnetar export --db DB --format jsonl`, parsed, by infohash.
pub fn export(db: &Path) -> Result<BTreeMap<String, Exported>, String> {
    let out = run(Command::new(magnetar_bin())
        .arg("export")
        .arg("--db")
        .arg(db)
        .args(["--format", "jsonl"]))?;
    let mut m = BTreeMap::new();
    for line in out.lines().filter(|l| !l.trim().is_empty()) {
        let v: serde_json::Value =
            serde_json::from_str(line).map_err(|e| format!("bad export line {line:?}: {e}"))?;
        let field = |k: &str| {
            v.get(k)
                .ok_or_else(|| format!("export line lacks {k}: {line}"))
        };
        let e = Exported {
            infohash: field("infohash")?
                .as_str()
                .unwrap_or_default()
                .to_lowercase(),
            name: field("name")?.as_str().unwrap_or_default().to_string(),
            size: field("size")?.as_u64().unwrap_or(u64::MAX),
            files: field("files")?.as_array().map_or(usize::MAX, Vec::len),
        };
        m.insert(e.infohash.clone(), e);
    }
    Ok(m)
}

/// VmRSS of `pid` in KiB, from /proc/<pid>/status.
pub fn rss_kib(pid: u32) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    s.lines()
        .find(|l| l.starts_with("VmRSS:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

/// Median of a non-empty slice.
pub fn median(v: &[f64]) -> f64 {
    let mut v = v.to_vec();
    v.sort_by(|a, b| a.total_cmp(b));
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}
