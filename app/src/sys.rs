//! Process facts: the file-descriptor limit, CPU time and resident memory.

use std::time::Duration;

/// Raises the soft RLIMIT_NOFILE to the hard limit. Returns the soft limit in force.
pub fn raise_nofile() -> u64 {
    match rlimit::Resource::NOFILE.get() {
        Ok((soft, hard)) => {
            if soft < hard {
                match rlimit::Resource::NOFILE.set(hard, hard) {
                    Ok(()) => {
                        tracing::debug!(from = soft, to = hard, "raised RLIMIT_NOFILE");
                        return hard;
                    }
                    Err(e) => tracing::warn!(soft, hard, "could not raise RLIMIT_NOFILE: {e}"),
                }
            }
            soft
        }
        Err(e) => {
            tracing::warn!("could not read RLIMIT_NOFILE: {e}; assuming 1024");
            1024
        }
    }
}

/// File descriptors kept free for everything that is not a peer connection
/// (UDP sockets, epoll, LMDB, the metrics listener, DNS, logs).
pub const FD_RESERVE: u64 = 64;

/// Leech connections allowed under the fd limit `nofile`.
pub fn leech_budget(nofile: u64, wanted: usize) -> usize {
    let room = nofile.saturating_sub(FD_RESERVE) as usize;
    wanted.min(room).max(1)
}

/// User plus system CPU time of a process, from `/proc/<pid>/stat`.
pub fn cpu_time(pid: u32) -> Option<Duration> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name (which may contain spaces) in parentheses.
    let rest = &s[s.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 (1-based), so 11 and 12 after `state`.
    let utime: u64 = f.get(11)?.parse().ok()?;
    let stime: u64 = f.get(12)?.parse().ok()?;
    // USER_HZ is 100 on every Linux ABI we run on.
    Some(Duration::from_millis((utime + stime) * 10))
}

/// Resident set size in bytes, from `/proc/<pid>/status` (`VmRSS`), and its peak (`VmHWM`).
pub fn rss(pid: u32) -> Option<(u64, u64)> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let field = |name: &str| -> Option<u64> {
        let line = s.lines().find(|l| l.starts_with(name))?;
        let kb: u64 = line[name.len()..]
            .trim()
            .trim_end_matches("kB")
            .trim()
            .parse()
            .ok()?;
        Some(kb * 1024)
    };
    Some((field("VmRSS:")?, field("VmHWM:")?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proc_readers_work_on_self() {
        let pid = std::process::id();
        assert!(cpu_time(pid).is_some());
        let (rss, peak) = rss(pid).unwrap();
        assert!(rss > 0 && peak >= rss);
        assert_eq!(leech_budget(1024, 1000), 960);
        assert_eq!(leech_budget(100_000, 1000), 1000);
        assert_eq!(leech_budget(10, 1000), 1);
    }
}
