//! A private PostgreSQL cluster for a test that needs server settings the shared server lacks
//! (for example `max_prepared_transactions > 0`) or a cluster of its own (a restore into a new
//! cluster, whose transaction counter starts afresh): `initdb` into a fresh directory, started with
//! `pg_ctl` on a free loopback port with trust authentication, stopped (`-m immediate`) and
//! deleted on drop. As `scripts/chaos` does: the newest installed server binaries
//! (`/usr/lib/postgresql/<version>/bin`, or `CAIRN_TEST_PG_BIN`), and, when the test runs as root,
//! the cluster belongs to the `postgres` user (PostgreSQL refuses to run as root) in a directory
//! under `/tmp` that user can enter.

use anyhow::Context;
use std::path::{Path, PathBuf};
use std::process::Command;

/// A running private cluster.
#[derive(Debug)]
pub struct PrivateCluster {
    /// `postgres://postgres@127.0.0.1:<port>/postgres`.
    pub url: String,
    /// Its port.
    pub port: u16,
    dir: PathBuf,
    bin: PathBuf,
    as_postgres: bool,
}

impl PrivateCluster {
    /// Creates and starts a cluster with `settings` (`name=value`, passed as `-c` options).
    pub fn start(settings: &[&str]) -> anyhow::Result<Self> {
        let bin = server_bin()?;
        let as_postgres = running_as_root();
        let dir = std::env::temp_dir().join(format!("cairn-test-pg-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(dir.join("sock"))?;
        let port = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        let cluster = Self {
            url: format!("postgres://postgres@127.0.0.1:{port}/postgres"),
            port,
            dir,
            bin,
            as_postgres,
        };
        if as_postgres {
            cluster.run("chown", &["-R", "postgres", &cluster.path("")], false)?;
        }
        let data = cluster.path("data");
        cluster.run_pg(
            "initdb",
            &[
                "-D",
                &data,
                "-U",
                "postgres",
                "--auth=trust",
                "-E",
                "UTF8",
                "--no-sync",
            ],
        )?;
        let mut options = format!(
            "-p {port} -k {} -c listen_addresses=127.0.0.1 -c fsync=off",
            cluster.path("sock")
        );
        for setting in settings {
            options.push_str(" -c ");
            options.push_str(setting);
        }
        let log = cluster.path("postgres.log");
        if let Err(error) = cluster.run_pg(
            "pg_ctl",
            &["-D", &data, "-l", &log, "-o", &options, "-w", "start"],
        ) {
            let log = std::fs::read_to_string(&log).unwrap_or_default();
            anyhow::bail!("{error:#}\n{log}");
        }
        Ok(cluster)
    }

    /// The directory of the server's binaries (`pg_dump`, `pg_restore`, `psql`, ...).
    pub fn bin(&self) -> &Path {
        &self.bin
    }

    fn path(&self, name: &str) -> String {
        self.dir.join(name).display().to_string()
    }

    fn run_pg(&self, tool: &str, args: &[&str]) -> anyhow::Result<()> {
        let program = self.bin.join(tool).display().to_string();
        self.run(&program, args, self.as_postgres)
    }

    fn run(&self, program: &str, args: &[&str], as_postgres: bool) -> anyhow::Result<()> {
        let output = if as_postgres {
            Command::new("runuser")
                .args(["-u", "postgres", "--", program])
                .args(args)
                .output()
        } else {
            Command::new(program).args(args).output()
        }
        .with_context(|| format!("running {program}"))?;
        anyhow::ensure!(
            output.status.success(),
            "{program} {args:?} failed ({}): {}{}",
            output.status,
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        Ok(())
    }
}

impl Drop for PrivateCluster {
    fn drop(&mut self) {
        let data = self.path("data");
        let _ = self.run_pg("pg_ctl", &["-D", &data, "-m", "immediate", "-w", "stop"]);
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn running_as_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

/// `CAIRN_TEST_PG_BIN`, else the newest `/usr/lib/postgresql/<version>/bin` with `initdb`.
fn server_bin() -> anyhow::Result<PathBuf> {
    if let Ok(bin) = std::env::var("CAIRN_TEST_PG_BIN") {
        return Ok(PathBuf::from(bin));
    }
    let root = Path::new("/usr/lib/postgresql");
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir(root)
        .with_context(|| format!("no PostgreSQL server binaries under {}", root.display()))?
        .filter_map(|entry| {
            let entry = entry.ok()?;
            let version = entry.file_name().to_str()?.parse::<u32>().ok()?;
            let bin = entry.path().join("bin");
            bin.join("initdb").exists().then_some((version, bin))
        })
        .collect();
    versions.sort();
    versions
        .pop()
        .map(|(_, bin)| bin)
        .with_context(|| format!("no initdb under {} (set CAIRN_TEST_PG_BIN)", root.display()))
}
