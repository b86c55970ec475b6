//! The database's advisory lock: who may rewrite or bulk-change it.
//!
//! LMDB itself lets any number of processes open an environment, and a reader
//! never blocks the writer. What it cannot survive is a maintenance command
//! (`db compact` renames a fresh copy over `data.mdb`) while a crawler writes: the
//! crawler keeps writing to the old, unlinked file and every later commit is lost.
//! So the crawler and the maintenance commands (`db compact`, `db prune`, `import`)
//! each hold an exclusive `flock(2)` on `magnetar.lock` in the database directory for
//! as long as they run, and refuse to start while someone else holds it. Readers
//! (`search`, `show`, `stats`, `export`, `db check`) take no lock and keep working.
//!
//! The holder writes a one-line JSON record (pid, role, start time, command line)
//! into the file after taking the lock, so a refused process can say who holds it.
//! The kernel releases the lock when its holder exits or dies, whatever the way; a
//! lock file left by a dead process therefore blocks nobody (its stale record is
//! overwritten by the next holder).

use std::fmt;
use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

/// The lock file's name inside the database directory.
pub const LOCK_FILE: &str = "magnetar.lock";

/// A held lock; released when dropped (or when the process ends).
#[derive(Debug)]
pub struct DbLock {
    file: File,
    path: PathBuf,
}

/// What the lock file says about its holder.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LockHolder {
    pub pid: Option<u32>,
    /// `crawl`, `db compact`, `db prune`, `import`, …
    pub role: String,
    /// Unix seconds.
    pub started_at: Option<u64>,
    pub command: String,
}

impl fmt::Display for LockHolder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.pid {
            Some(pid) => write!(f, "process {pid}")?,
            None => write!(f, "another process (it has not written its record yet)")?,
        }
        if !self.role.is_empty() {
            write!(f, " running `magnetar {}`", self.role)?;
        }
        if let Some(t) = self.started_at {
            let now = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_secs());
            write!(f, ", started {} s ago", now.saturating_sub(t))?;
        }
        if !self.command.is_empty() {
            write!(f, " ({})", self.command)?;
        }
        Ok(())
    }
}

/// Why [`DbLock::acquire`] failed.
#[derive(Debug)]
pub enum LockError {
    /// Another process holds the lock.
    Held { path: PathBuf, holder: LockHolder },
    /// The lock file could not be opened or locked.
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
}

impl fmt::Display for LockError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LockError::Held { path, holder } => write!(
                f,
                "the database {} is in use by {holder}; stop it first (lock file {})",
                path.parent().unwrap_or(path).display(),
                path.display()
            ),
            LockError::Io { path, source } => write!(f, "lock file {}: {source}", path.display()),
        }
    }
}

impl std::error::Error for LockError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            LockError::Io { source, .. } => Some(source),
            LockError::Held { .. } => None,
        }
    }
}

impl DbLock {
    /// Takes the lock of the database directory `dir` (which must exist) for `role`
    /// without waiting; fails with [`LockError::Held`] naming the holder when another
    /// process has it.
    pub fn acquire(dir: &Path, role: &str) -> Result<DbLock, LockError> {
        let path = dir.join(LOCK_FILE);
        let io = |source| LockError::Io {
            path: path.clone(),
            source,
        };
        // Not truncated on open: the record belongs to whoever holds the lock.
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(io)?;
        match rustix::fs::flock(&file, rustix::fs::FlockOperation::NonBlockingLockExclusive) {
            Ok(()) => {}
            Err(e) if e == rustix::io::Errno::WOULDBLOCK => {
                let mut s = String::new();
                let _ = file.read_to_string(&mut s);
                return Err(LockError::Held {
                    holder: parse_record(&s),
                    path,
                });
            }
            Err(e) => return Err(io(e.into())),
        }
        let record = serde_json::json!({
            "pid": std::process::id(),
            "role": role,
            "started_at": SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_secs()),
            "command": std::env::args().collect::<Vec<_>>().join(" "),
        });
        file.set_len(0).map_err(io)?;
        file.seek(SeekFrom::Start(0)).map_err(io)?;
        writeln!(file, "{record}").map_err(io)?;
        file.flush().map_err(io)?;
        Ok(DbLock { file, path })
    }

    /// Who holds the lock of `dir` now, if anyone (without taking it).
    pub fn holder(dir: &Path) -> Result<Option<LockHolder>, LockError> {
        match DbLock::acquire(dir, "lock probe") {
            Ok(l) => {
                drop(l);
                Ok(None)
            }
            Err(LockError::Held { holder, .. }) => Ok(Some(holder)),
            Err(e) => Err(e),
        }
    }

    /// The lock file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for DbLock {
    fn drop(&mut self) {
        // Clear the record while still holding the lock; closing the file releases it.
        let _ = self.file.set_len(0);
    }
}

fn parse_record(s: &str) -> LockHolder {
    let Ok(v) = serde_json::from_str::<serde_json::Value>(s.trim()) else {
        return LockHolder::default();
    };
    LockHolder {
        pid: v["pid"].as_u64().and_then(|p| u32::try_from(p).ok()),
        role: v["role"].as_str().unwrap_or_default().to_string(),
        started_at: v["started_at"].as_u64(),
        command: v["command"].as_str().unwrap_or_default().to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exclusive_within_and_across_handles() {
        let dir = tempfile::tempdir().unwrap();
        let a = DbLock::acquire(dir.path(), "crawl").unwrap();
        // flock locks belong to the open file description: a second open conflicts
        // even in the same process, as another process would.
        match DbLock::acquire(dir.path(), "db compact") {
            Err(LockError::Held { holder, .. }) => {
                assert_eq!(holder.pid, Some(std::process::id()));
                assert_eq!(holder.role, "crawl");
                let msg = LockError::Held {
                    path: dir.path().join(LOCK_FILE),
                    holder,
                }
                .to_string();
                assert!(
                    msg.contains(&format!("process {}", std::process::id())),
                    "{msg}"
                );
                assert!(msg.contains("magnetar crawl"), "{msg}");
            }
            other => panic!("expected Held, got {other:?}"),
        }
        assert!(DbLock::holder(dir.path()).unwrap().is_some());
        drop(a);
        assert_eq!(DbLock::holder(dir.path()).unwrap(), None);
        let b = DbLock::acquire(dir.path(), "db compact").unwrap();
        drop(b);
    }

    #[test]
    fn stale_record_is_harmless() {
        let dir = tempfile::tempdir().unwrap();
        // A record left by a process that died: no flock is held on it.
        std::fs::write(
            dir.path().join(LOCK_FILE),
            "{\"pid\":4000000,\"role\":\"crawl\",\"started_at\":1}\n",
        )
        .unwrap();
        let l = DbLock::acquire(dir.path(), "db compact").unwrap();
        let s = std::fs::read_to_string(l.path()).unwrap();
        assert_eq!(
            parse_record(&s).pid,
            Some(std::process::id()),
            "record not rewritten: {s}"
        );
    }
}
