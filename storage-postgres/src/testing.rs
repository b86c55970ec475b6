//! A real, throw-away PostgreSQL server for tests and benchmarks.
//!
//! [`TempPostgres::start`] runs the distribution's `initdb` into a new temporary
//! directory and starts the server with `pg_ctl`, listening only on a Unix socket
//! in that directory (`listen_addresses = ''`: no TCP at all). Dropping it stops
//! the server (`pg_ctl stop -m immediate`) and removes the directory, also when the
//! test fails (panics unwind through the guard). PostgreSQL refuses to run as root:
//! when this process is root, the directory is given to the `postgres` user and
//! `initdb`/`pg_ctl` run as that user through `runuser`.
//!
//! The binaries are found with `pg_config --bindir`, else the newest
//! `/usr/lib/postgresql/*/bin` (Debian's layout), else `$MAGNETAR_PG_BINDIR`.
//! Nothing is skipped: when a server cannot start, [`TempPostgres::start`] returns
//! an error saying why (and the test fails with it).
//!
//! The server is tuned for tests (`fsync = off`, `synchronous_commit = off`,
//! `full_page_writes = off`): a crash of the machine may lose its data, which
//! is thrown away anyway. Nothing here is a production setting.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::error::{PgError, Result};

/// The user the server runs as when this process is root.
const PG_USER: &str = "postgres";
/// The database role the tests connect as (made by `initdb -U`).
pub const ROLE: &str = "magnetar";

/// A running PostgreSQL server in a temporary directory; stopped and removed on drop.
#[derive(Debug)]
pub struct TempPostgres {
    dir: PathBuf,
    bindir: PathBuf,
    as_root: bool,
    stopped: bool,
}

/// The directory of `initdb`, `pg_ctl` and `postgres`.
pub fn find_bindir() -> Result<PathBuf> {
    if let Some(d) = std::env::var_os("MAGNETAR_PG_BINDIR") {
        return Ok(PathBuf::from(d));
    }
    if let Ok(out) = Command::new("pg_config").arg("--bindir").output() {
        if out.status.success() {
            let d = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
            if d.join("initdb").exists() && d.join("pg_ctl").exists() {
                return Ok(d);
            }
        }
    }
    // Debian: pg_config (libpq-dev) may be missing or point elsewhere; the server
    // binaries live in /usr/lib/postgresql/<major>/bin.
    let mut best: Option<(u32, PathBuf)> = None;
    if let Ok(rd) = std::fs::read_dir("/usr/lib/postgresql") {
        for e in rd.flatten() {
            let Some(major) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
                continue;
            };
            let bin = e.path().join("bin");
            if bin.join("initdb").exists() && best.as_ref().is_none_or(|b| major > b.0) {
                best = Some((major, bin));
            }
        }
    }
    best.map(|b| b.1).ok_or_else(|| {
        PgError::Server(
            "no PostgreSQL server binaries: neither `pg_config --bindir` nor \
             /usr/lib/postgresql/*/bin has initdb (install the `postgresql` package; \
             .ci/test does)"
                .into(),
        )
    })
}

fn run(mut cmd: Command, what: &str) -> Result<()> {
    let out = cmd
        .output()
        .map_err(|e| PgError::Server(format!("{what}: cannot run {cmd:?}: {e}")))?;
    if !out.status.success() {
        return Err(PgError::Server(format!(
            "{what} failed ({}): {}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )));
    }
    Ok(())
}

fn uid_of(user: &str) -> Result<(u32, u32)> {
    let id = |flag: &str| -> Result<u32> {
        let out = Command::new("id")
            .args([flag, user])
            .output()
            .map_err(|e| PgError::Server(format!("id {flag} {user}: {e}")))?;
        String::from_utf8_lossy(&out.stdout)
            .trim()
            .parse()
            .map_err(|_| {
                PgError::Server(format!(
                    "running as root needs the `{user}` user (made by the postgresql \
                     package) to run the server: `id {flag} {user}` failed"
                ))
            })
    };
    Ok((id("-u")?, id("-g")?))
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

impl TempPostgres {
    /// Initialises and starts a server; returns once it accepts connections.
    pub fn start() -> Result<TempPostgres> {
        static SEQ: AtomicU64 = AtomicU64::new(0);
        let bindir = find_bindir()?;
        let as_root = is_root();
        // As root the server runs as `postgres`, which must reach the directory:
        // /tmp, whatever TMPDIR says (it may be a directory only root can enter).
        let base = if as_root {
            PathBuf::from("/tmp")
        } else {
            std::env::temp_dir()
        };
        let dir = base.join(format!(
            "magnetar-pg-{}-{}",
            std::process::id(),
            SEQ.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir)
            .map_err(|e| PgError::Server(format!("creating {}: {e}", dir.display())))?;
        // From here on the guard removes the directory, whatever fails.
        let mut pg = TempPostgres {
            dir,
            bindir,
            as_root,
            stopped: true,
        };
        if as_root {
            let (uid, gid) = uid_of(PG_USER)?;
            std::os::unix::fs::chown(&pg.dir, Some(uid), Some(gid))
                .map_err(|e| PgError::Server(format!("chown {}: {e}", pg.dir.display())))?;
        }
        let data = pg.dir.join("data");
        let mut initdb = pg.command("initdb");
        initdb.arg("-D").arg(&data).args([
            "-U",
            ROLE,
            "--auth=trust",
            "-E",
            "UTF8",
            "--locale=C",
            "--no-sync",
        ]);
        run(initdb, "initdb")?;
        pg.pg_ctl_start()?;
        Ok(pg)
    }

    /// Starts the (stopped) server again on the same data directory.
    pub fn start_again(&mut self) -> Result<()> {
        if !self.stopped {
            return Ok(());
        }
        self.pg_ctl_start()
    }

    fn pg_ctl_start(&mut self) -> Result<()> {
        let data = self.dir.join("data");
        let pg = self;
        let opts = format!(
            "-c listen_addresses='' -k {} -c fsync=off -c synchronous_commit=off \
             -c full_page_writes=off -c max_connections=50",
            pg.dir.display()
        );
        let mut start = pg.command("pg_ctl");
        start
            .arg("-D")
            .arg(&data)
            .arg("-l")
            .arg(pg.dir.join("server.log"))
            .args(["-w", "-t", "60", "-o", &opts, "start"]);
        pg.stopped = false;
        if let Err(e) = run(start, "pg_ctl start") {
            let log = std::fs::read_to_string(pg.dir.join("server.log")).unwrap_or_default();
            return Err(PgError::Server(format!("{e}\nserver log:\n{log}")));
        }
        Ok(())
    }

    fn command(&self, prog: &str) -> Command {
        let path = self.bindir.join(prog);
        if self.as_root {
            let mut c = Command::new("runuser");
            c.args(["-u", PG_USER, "--"]).arg(path);
            c
        } else {
            Command::new(path)
        }
    }

    /// The directory holding the server's socket (the `host` to connect to).
    pub fn socket_dir(&self) -> &Path {
        &self.dir
    }

    /// A connection string for the `postgres` database as [`ROLE`].
    pub fn url(&self) -> String {
        self.url_for("postgres")
    }

    /// A connection string for database `db` as [`ROLE`].
    pub fn url_for(&self, db: &str) -> String {
        format!("host={} user={ROLE} dbname={db}", self.dir.display())
    }

    /// Creates an empty database `name` (each test can have its own).
    pub fn create_database(&self, name: &str) -> Result<String> {
        let mut c = postgres::Client::connect(&self.url(), postgres::NoTls)
            .map_err(PgError::db("connecting to the test server"))?;
        c.batch_execute(&format!("CREATE DATABASE \"{}\"", name.replace('"', "")))
            .map_err(PgError::db("creating a test database"))?;
        Ok(self.url_for(name))
    }

    /// The server's log so far (for failure messages).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("server.log")).unwrap_or_default()
    }

    /// Stops the server (`-m fast`: sessions are ended, the shutdown is clean).
    pub fn stop(&mut self) -> Result<()> {
        if self.stopped {
            return Ok(());
        }
        self.stopped = true;
        let mut c = self.command("pg_ctl");
        c.arg("-D")
            .arg(self.dir.join("data"))
            .args(["-w", "-t", "60", "-m", "fast", "stop"]);
        run(c, "pg_ctl stop")
    }
}

impl Drop for TempPostgres {
    fn drop(&mut self) {
        if !self.stopped {
            self.stopped = true;
            let mut c = self.command("pg_ctl");
            c.arg("-D").arg(self.dir.join("data")).args([
                "-w",
                "-t",
                "60",
                "-m",
                "immediate",
                "stop",
            ]);
            if let Err(e) = run(c, "pg_ctl stop") {
                eprintln!("TempPostgres: {e}");
            }
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
