//! A private PostgreSQL cluster for one test: `initdb` into a temporary directory, started on a
//! free loopback port with trust authentication, stopped (`-m immediate`) and removed on drop. For
//! tests that need what the shared server cannot give them: a cluster with a fresh transaction
//! counter (a restore into a new cluster), other server settings, or one the test may restart.
//! Runs the server binaries of the newest installed PostgreSQL (`/usr/lib/postgresql/<v>/bin`) as
//! the `postgres` user when the test runs as root.

use std::path::{Path, PathBuf};
use std::process::Command;

/// A running private cluster.
#[derive(Debug)]
pub struct PrivateCluster {
    bin: PathBuf,
    dir: PathBuf,
    port: u16,
    as_postgres: bool,
}

impl PrivateCluster {
    /// Creates and starts a cluster; `settings` are extra `-c name=value` server settings.
    pub fn start(settings: &[(&str, &str)]) -> anyhow::Result<Self> {
        let bin = newest_bin()?;
        let as_postgres = is_root();
        let dir = std::env::temp_dir().join(format!("cairn-test-pg-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(&dir)?;
        if as_postgres {
            run(Command::new("chown").arg("postgres:postgres").arg(&dir))?;
        }
        let port = free_port()?;
        let cluster = Self {
            bin,
            dir,
            port,
            as_postgres,
        };
        cluster.run_pg(
            "initdb",
            &[
                "-D",
                &cluster.data().to_string_lossy(),
                "-U",
                "postgres",
                "--auth=trust",
                "-E",
                "UTF8",
            ],
        )?;
        let mut options = format!(
            "-p {} -c listen_addresses=127.0.0.1 -c unix_socket_directories={} -c fsync=off",
            cluster.port,
            cluster.dir.display()
        );
        for (name, value) in settings {
            options.push_str(&format!(" -c {name}={value}"));
        }
        let log = cluster.dir.join("postgres.log");
        cluster.run_pg(
            "pg_ctl",
            &[
                "-D",
                &cluster.data().to_string_lossy(),
                "-l",
                &log.to_string_lossy(),
                "-o",
                &options,
                "-w",
                "start",
            ],
        )?;
        Ok(cluster)
    }

    /// A URL of the cluster's `postgres` database.
    pub fn url(&self) -> String {
        self.url_of("postgres")
    }

    /// A URL of database `name` on the cluster.
    pub fn url_of(&self, name: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{name}", self.port)
    }

    /// The directory of the server binaries (`pg_dump`, `pg_restore`, `psql`, ...).
    pub fn bin(&self) -> &Path {
        &self.bin
    }

    fn data(&self) -> PathBuf {
        self.dir.join("data")
    }

    fn run_pg(&self, program: &str, args: &[&str]) -> anyhow::Result<()> {
        let path = self.bin.join(program);
        let mut command = if self.as_postgres {
            let mut c = Command::new("runuser");
            c.arg("-u").arg("postgres").arg("--").arg(&path);
            c
        } else {
            Command::new(&path)
        };
        command.args(args).current_dir(&self.dir);
        run(&mut command)
    }
}

impl Drop for PrivateCluster {
    fn drop(&mut self) {
        let data = self.data().to_string_lossy().into_owned();
        let _ = self.run_pg("pg_ctl", &["-D", &data, "-m", "immediate", "-w", "stop"]);
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn run(command: &mut Command) -> anyhow::Result<()> {
    let output = command.output()?;
    anyhow::ensure!(
        output.status.success(),
        "{command:?} failed: {}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    Ok(())
}

fn newest_bin() -> anyhow::Result<PathBuf> {
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")?
        .filter_map(|entry| entry.ok())
        .filter_map(|entry| {
            let version = entry.file_name().to_string_lossy().parse::<u32>().ok()?;
            let bin = entry.path().join("bin");
            bin.join("initdb").exists().then_some((version, bin))
        })
        .collect();
    versions.sort();
    versions
        .pop()
        .map(|(_, bin)| bin)
        .ok_or_else(|| anyhow::anyhow!("no PostgreSQL server binaries under /usr/lib/postgresql"))
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

fn free_port() -> anyhow::Result<u16> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    Ok(listener.local_addr()?.port())
}
