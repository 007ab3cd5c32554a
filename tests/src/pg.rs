//! A throwaway PostgreSQL cluster of a test's own, on a free port, that the test can stop (an
//! outage) and start again. Needs the PostgreSQL server binaries (`/usr/lib/postgresql/*/bin`,
//! installed by `make test`); as root, they run as the `postgres` user (initdb refuses root).

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
}

fn sh_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

/// Runs a PostgreSQL binary, as the `postgres` user when we are root.
fn run_pg(bin: &Path, args: &[&str]) -> Output {
    let mut cmd = if is_root() {
        let line = std::iter::once(bin.to_string_lossy().into_owned())
            .chain(args.iter().map(|a| a.to_string()))
            .map(|a| sh_quote(&a))
            .collect::<Vec<_>>()
            .join(" ");
        let mut c = Command::new("su");
        c.args(["postgres", "-s", "/bin/bash", "-c", &line]);
        c
    } else {
        let mut c = Command::new(bin);
        c.args(args);
        c
    };
    cmd.output().unwrap()
}

/// The newest `/usr/lib/postgresql/*/bin` that has `initdb`.
pub fn pg_bin() -> Option<PathBuf> {
    let mut found: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .flatten()
        .filter_map(|e| {
            let version = e.file_name().to_str()?.parse().ok()?;
            let bin = e.path().join("bin");
            bin.join("initdb").exists().then_some((version, bin))
        })
        .collect();
    found.sort();
    found.pop().map(|(_, bin)| bin)
}

/// A cluster (trust authentication on 127.0.0.1, no TLS, `fsync` off); stopped and removed on
/// drop.
pub struct PgCluster {
    bin: PathBuf,
    port: u16,
    dir: tempfile::TempDir,
    tls: bool,
}

/// What a TLS cluster serves (PEM): its CA (written beside it for clients, [`PgCluster::ca_file`]),
/// its certificate and key.
#[derive(Debug, Clone)]
pub struct PgTls {
    pub ca_pem: String,
    pub cert_pem: String,
    pub key_pem: String,
}

impl PgCluster {
    /// Creates and starts a cluster (plain connections from 127.0.0.1).
    pub fn start() -> Self {
        Self::start_with(None)
    }

    /// Creates and starts a cluster that accepts TLS connections only from 127.0.0.1 (a plain
    /// one is turned away, so every success over it used TLS).
    pub fn start_tls(tls: &PgTls) -> Self {
        Self::start_with(Some(tls))
    }

    /// The CA file of a TLS cluster (`sslrootcert`).
    pub fn ca_file(&self) -> PathBuf {
        self.dir.path().join("ca.pem")
    }

    fn start_with(tls: Option<&PgTls>) -> Self {
        let bin = pg_bin().expect(
            "PostgreSQL server binaries not found under /usr/lib/postgresql (make test installs them)",
        );
        let dir = tempfile::tempdir().unwrap();
        if let Some(t) = tls {
            let path = |name: &str| dir.path().join(name);
            std::fs::write(path("ca.pem"), &t.ca_pem).unwrap();
            std::fs::write(path("server.crt"), &t.cert_pem).unwrap();
            std::fs::write(path("server.key"), &t.key_pem).unwrap();
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(path("server.key"), std::fs::Permissions::from_mode(0o600))
                .unwrap();
        }
        if is_root() {
            let ok = Command::new("chown")
                .args(["-R", "postgres:postgres"])
                .arg(dir.path())
                .status()
                .unwrap();
            assert!(ok.success(), "chown to postgres failed");
        }
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let cluster = Self {
            bin,
            port,
            dir,
            tls: tls.is_some(),
        };
        let data = cluster.data();
        let out = run_pg(
            &cluster.bin.join("initdb"),
            &[
                "-D",
                &data,
                "-U",
                "postgres",
                "-A",
                "trust",
                "--no-sync",
                "-E",
                "UTF8",
                "--locale=C.UTF-8",
            ],
        );
        assert!(out.status.success(), "initdb failed: {out:?}");
        let hba = if cluster.tls {
            "local all all trust\nhostssl all all 127.0.0.1/32 trust\n\
             hostnossl all all 127.0.0.1/32 reject\n"
        } else {
            "local all all trust\nhost all all 127.0.0.1/32 trust\n"
        };
        std::fs::write(Path::new(&data).join("pg_hba.conf"), hba).unwrap();
        cluster.start_again();
        cluster
    }

    fn data(&self) -> String {
        self.dir.path().join("data").display().to_string()
    }

    fn log(&self) -> String {
        self.dir.path().join("log").display().to_string()
    }

    /// `postgres://postgres@127.0.0.1:<port>/postgres`.
    pub fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// Starts the (stopped) cluster and waits until it accepts connections.
    pub fn start_again(&self) {
        let dir = self.dir.path().display();
        let mut opts = format!(
            "-p {} -k {dir} -c listen_addresses=127.0.0.1 -c fsync=off",
            self.port
        );
        if self.tls {
            opts.push_str(&format!(
                " -c ssl=on -c ssl_cert_file={dir}/server.crt -c ssl_key_file={dir}/server.key"
            ));
        }
        let out = run_pg(
            &self.bin.join("pg_ctl"),
            &[
                "-D",
                &self.data(),
                "-l",
                &self.log(),
                "-w",
                "-o",
                &opts,
                "start",
            ],
        );
        assert!(
            out.status.success(),
            "pg_ctl start failed: {out:?}\n{}",
            std::fs::read_to_string(self.log()).unwrap_or_default()
        );
    }

    /// Stops the cluster at once (`-m immediate`: connections are cut, as in a crash).
    pub fn stop(&self) {
        let out = run_pg(
            &self.bin.join("pg_ctl"),
            &["-D", &self.data(), "-m", "immediate", "-w", "stop"],
        );
        assert!(out.status.success(), "pg_ctl stop failed: {out:?}");
    }

    /// The postmaster's process id (first line of this cluster's `postmaster.pid`).
    fn postmaster(&self) -> String {
        let pid = std::fs::read_to_string(Path::new(&self.data()).join("postmaster.pid"))
            .expect("the cluster is running");
        let pid = pid.lines().next().unwrap_or_default().trim().to_string();
        assert!(pid.parse::<u32>().is_ok(), "postmaster.pid: {pid:?}");
        pid
    }

    /// Sends `signal` to this cluster's postmaster and its children (backends and auxiliary
    /// processes), found by the postmaster's pid: never to another cluster on the machine.
    fn signal_all(&self, signal: &str) {
        let postmaster = self.postmaster();
        let out = Command::new("pgrep")
            .args(["-P", &postmaster])
            .output()
            .unwrap();
        let children: Vec<String> = String::from_utf8_lossy(&out.stdout)
            .split_whitespace()
            .map(str::to_string)
            .collect();
        // Stopped: the postmaster first (it forks nothing more); resumed: it last.
        let mut pids = vec![postmaster];
        pids.extend(children);
        if signal == "CONT" {
            pids.reverse();
        }
        let ok = Command::new("kill")
            .args(["-s", signal])
            .args(&pids)
            .status()
            .unwrap();
        assert!(ok.success(), "kill -s {signal} {pids:?} failed");
    }

    /// Freezes the cluster (SIGSTOP to every process of it): it accepts TCP connections (the
    /// kernel does) and data, and answers nothing, like a database behind a partition or in a
    /// failover that drops packets.
    pub fn freeze(&self) {
        self.signal_all("STOP");
    }

    /// Resumes a frozen cluster (SIGCONT).
    pub fn thaw(&self) {
        self.signal_all("CONT");
    }

    /// Runs one SQL statement with `psql` and returns its unaligned, tuples-only output.
    pub fn psql(&self, sql: &str) -> String {
        let port = self.port.to_string();
        let out = run_pg(
            &self.bin.join("psql"),
            &[
                "-h",
                "127.0.0.1",
                "-p",
                &port,
                "-U",
                "postgres",
                "-d",
                "postgres",
                "-At",
                "-v",
                "ON_ERROR_STOP=1",
                "-c",
                sql,
            ],
        );
        assert!(out.status.success(), "psql failed: {out:?}");
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }
}

impl Drop for PgCluster {
    fn drop(&mut self) {
        let _ = run_pg(
            &self.bin.join("pg_ctl"),
            &["-D", &self.data(), "-m", "immediate", "-w", "stop"],
        );
    }
}
