//! `sslmode` / `sslrootcert` against a real PostgreSQL with TLS: a throwaway cluster whose
//! pg_hba.conf accepts TLS connections only, with certificates made here.
//!
//! Needs the PostgreSQL server binaries (`/usr/lib/postgresql/*/bin`, installed by `make test`);
//! without them the test fails, unless `BYOK_SKIP_PG_TLS_TEST=1`.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test helpers outside #[test] fns

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use byok_core::services::{ChangeNotifier, Invalidation};
use byok_store::{Database, DbOptions, listen_invalidations};
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose};

/// A CA's PEM and an issuer for leaf certificates.
fn ca(name: &str) -> (String, Issuer<'static, KeyPair>) {
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.distinguished_name.push(DnType::CommonName, name);
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let key = KeyPair::generate().unwrap();
    let cert = params.self_signed(&key).unwrap();
    (cert.pem(), Issuer::new(params, key))
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
}

fn sh_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

/// Runs a PostgreSQL binary, as the `postgres` user when we are root (initdb refuses root).
fn run_pg(bin: &Path, args: &[&str]) -> std::process::Output {
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

/// A PostgreSQL cluster on a free port, TLS-only (or, with `tls` false, without TLS);
/// stopped and removed on drop.
struct Cluster {
    bin: PathBuf,
    port: u16,
    ca_pem: PathBuf,
    dir: tempfile::TempDir,
}

impl Cluster {
    fn data(&self) -> String {
        self.dir.path().join("data").display().to_string()
    }

    fn start(bin: PathBuf, tls: bool, ca_pem: &str, server_cert: &str, server_key: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let path = |name: &str| dir.path().join(name);
        std::fs::write(path("ca.pem"), ca_pem).unwrap();
        std::fs::write(path("server.crt"), server_cert).unwrap();
        std::fs::write(path("server.key"), server_key).unwrap();
        {
            use std::os::unix::fs::PermissionsExt;
            let private = std::fs::Permissions::from_mode(0o600);
            std::fs::set_permissions(path("server.key"), private).unwrap();
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
            ca_pem: path("ca.pem"),
            dir,
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
        // TLS only: a plain connection is turned away (so every success below went over TLS).
        let hba = if tls {
            "local all all trust\n\
             hostssl all all 127.0.0.1/32 trust\n\
             hostnossl all all 127.0.0.1/32 reject\n"
        } else {
            "local all all trust\nhost all all 127.0.0.1/32 trust\n"
        };
        std::fs::write(Path::new(&data).join("pg_hba.conf"), hba).unwrap();
        let opts = format!(
            "-p {port} -k {dir} -c listen_addresses=127.0.0.1 -c fsync=off -c ssl={ssl} \
             -c ssl_cert_file={dir}/server.crt -c ssl_key_file={dir}/server.key",
            dir = cluster.dir.path().display(),
            ssl = if tls { "on" } else { "off" },
        );
        let log = cluster.dir.path().join("log").display().to_string();
        let out = run_pg(
            &cluster.bin.join("pg_ctl"),
            &["-D", &data, "-l", &log, "-w", "-o", &opts, "start"],
        );
        let log_text = std::fs::read_to_string(&log).unwrap_or_default();
        assert!(
            out.status.success(),
            "pg_ctl start failed: {out:?}\n{log_text}"
        );
        cluster
    }

    fn url(&self, host: &str, query: &str) -> String {
        format!(
            "postgres://postgres:s3cret-pw@{host}:{}/postgres{query}",
            self.port
        )
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let data = self.data();
        let _ = run_pg(
            &self.bin.join("pg_ctl"),
            &["-D", &data, "-m", "immediate", "-w", "stop"],
        );
    }
}

/// The newest `/usr/lib/postgresql/*/bin` that has `initdb`.
fn pg_bin() -> Option<PathBuf> {
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

fn opts() -> DbOptions {
    DbOptions {
        max_connections: 2,
        acquire_timeout: Duration::from_secs(10),
        ..DbOptions::default()
    }
}

/// Connects, migrates and pings `url`; the error chain on failure.
async fn try_use(url: &str) -> Result<(), String> {
    let chain = |e: &(dyn std::error::Error + 'static)| {
        let mut s = e.to_string();
        let mut next = e.source();
        while let Some(c) = next {
            let text = c.to_string();
            if !s.ends_with(&text) {
                s = format!("{s}: {text}");
            }
            next = c.source();
        }
        s
    };
    let db = Database::connect(url, &opts())
        .await
        .map_err(|e| chain(&e))?;
    db.ping().await.map_err(|e| chain(&e))?;
    db.migrate().await.map_err(|e| chain(&e))?;
    Ok(())
}

/// The next invalidation the listener hands over.
async fn next(rx: &mut tokio::sync::mpsc::UnboundedReceiver<Invalidation>) -> Option<Invalidation> {
    tokio::time::timeout(Duration::from_secs(15), rx.recv())
        .await
        .expect("no invalidation within 15 s")
}

/// `url` must fail; the error must not show the password.
async fn fails(url: &str) -> String {
    let e = try_use(url).await.expect_err("connected");
    eprintln!("{e}");
    assert!(!e.contains("s3cret-pw"), "the password is in: {e}");
    e
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sslmode_against_a_tls_only_postgres() {
    let Some(bin) = pg_bin() else {
        if std::env::var("BYOK_SKIP_PG_TLS_TEST").as_deref() == Ok("1") {
            eprintln!("BYOK_SKIP_PG_TLS_TEST=1: no PostgreSQL binaries, pg_tls test skipped");
            return;
        }
        panic!(
            "no PostgreSQL server binaries under /usr/lib/postgresql/*/bin: install them \
             (`make test` does: apt-get install postgresql) or set BYOK_SKIP_PG_TLS_TEST=1"
        );
    };
    let (ca_pem, issuer) = ca("byok pg test CA");
    let mut leaf = CertificateParams::new(vec!["localhost".to_string()]).unwrap();
    leaf.distinguished_name
        .push(DnType::CommonName, "localhost");
    let leaf_key = KeyPair::generate().unwrap();
    let leaf_cert = leaf.signed_by(&leaf_key, &issuer).unwrap();
    let pg = Cluster::start(
        bin.clone(),
        true,
        &ca_pem,
        &leaf_cert.pem(),
        &leaf_key.serialize_pem(),
    );

    let (other_ca_pem, _) = ca("some other CA");
    let other_ca = pg.dir.path().join("other-ca.pem");
    std::fs::write(&other_ca, other_ca_pem).unwrap();
    let ca_file = pg.ca_pem.display().to_string();
    let other_file = other_ca.display().to_string();

    // verify-full, the test CA, the name in the certificate: pool, migrations, LISTEN/NOTIFY.
    let good = pg.url(
        "localhost",
        &format!("?sslmode=verify-full&sslrootcert={ca_file}"),
    );
    try_use(&good).await.unwrap();
    let db = Database::connect(&good, &opts()).await.unwrap();
    assert_eq!(db.migrate().await.unwrap(), 0, "already migrated");
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let listener = tokio::spawn(listen_invalidations(good.clone(), move |inv| {
        let _ = tx.send(inv);
    }));
    assert_eq!(
        next(&mut rx).await,
        Some(Invalidation::Everything),
        "the listener connects over TLS"
    );
    let change = Invalidation::Token {
        id: uuid::Uuid::new_v4(),
    };
    db.publish(change.clone()).await;
    assert_eq!(next(&mut rx).await, Some(change), "NOTIFY over the pool");
    listener.abort();

    // verify-full with a CA that did not sign the server's certificate.
    let e = fails(&pg.url(
        "localhost",
        &format!("?sslmode=verify-full&sslrootcert={other_file}"),
    ))
    .await;
    assert!(e.contains("UnknownIssuer"), "{e}");
    assert!(e.contains("sslmode=verify-full"), "{e}");

    // verify-full to 127.0.0.1, a name the certificate does not carry.
    let e = fails(&pg.url(
        "127.0.0.1",
        &format!("?sslmode=verify-full&sslrootcert={ca_file}"),
    ))
    .await;
    assert!(e.contains("not valid for name \"127.0.0.1\""), "{e}");

    // verify-ca checks the chain but not the name.
    try_use(&pg.url(
        "127.0.0.1",
        &format!("?sslmode=verify-ca&sslrootcert={ca_file}"),
    ))
    .await
    .unwrap();
    let e = fails(&pg.url(
        "127.0.0.1",
        &format!("?sslmode=verify-ca&sslrootcert={other_file}"),
    ))
    .await;
    assert!(e.contains("UnknownIssuer"), "{e}");

    // verify-ca / verify-full without sslrootcert are refused at start (as libpq does without
    // root.crt), never checked against public roots that anyone's certificate chains to.
    for (host, mode) in [("127.0.0.1", "verify-ca"), ("localhost", "verify-full")] {
        let e = fails(&pg.url(host, &format!("?sslmode={mode}"))).await;
        assert!(
            e.contains(&format!("sslmode={mode} needs sslrootcert=PATH")),
            "{e}"
        );
    }
    let e = fails(&pg.url("127.0.0.1", "?sslmode=verify-ca&sslrootcert=system")).await;
    assert!(
        e.contains("sslrootcert=system needs sslmode=verify-full"),
        "{e}"
    );
    // verify-full against the public roots: this server's private CA is not among them.
    let e = fails(&pg.url("localhost", "?sslmode=verify-full&sslrootcert=system")).await;
    assert!(e.contains("UnknownIssuer"), "{e}");

    // require without a CA takes the certificate as it is; with one it checks the chain (libpq).
    try_use(&pg.url("127.0.0.1", "?sslmode=require"))
        .await
        .unwrap();
    let e = fails(&pg.url(
        "127.0.0.1",
        &format!("?sslmode=require&sslrootcert={other_file}"),
    ))
    .await;
    assert!(e.contains("UnknownIssuer"), "{e}");

    // No sslmode is libpq's `prefer`: TLS when offered (and here only TLS gets in).
    try_use(&pg.url("localhost", "")).await.unwrap();
    try_use(&pg.url("localhost", "?sslmode=prefer&application_name=byok"))
        .await
        .unwrap();

    // disable: plain, which this server refuses.
    let e = fails(&pg.url("127.0.0.1", "?sslmode=disable")).await;
    assert!(e.contains("no encryption"), "{e}");

    // An unknown sslmode fails at start, naming the allowed values and not the URL.
    let e = fails(&pg.url("localhost", "?sslmode=verify-everything")).await;
    assert!(
        e.contains("disable, prefer, require, verify-ca, verify-full"),
        "{e}"
    );
    assert!(!e.contains("s3cret-pw") && !e.contains("localhost"), "{e}");
    drop(db);
    drop(pg);

    // A server without TLS: require and verify-full refuse it, prefer falls back to plain.
    let plain = Cluster::start(
        bin,
        false,
        &ca_pem,
        &leaf_cert.pem(),
        &leaf_key.serialize_pem(),
    );
    let e = fails(&plain.url("localhost", "?sslmode=require")).await;
    assert!(e.contains("server does not support TLS"), "{e}");
    let e = fails(&plain.url(
        "localhost",
        &format!(
            "?sslmode=verify-full&sslrootcert={}",
            plain.ca_pem.display()
        ),
    ))
    .await;
    assert!(e.contains("server does not support TLS"), "{e}");
    try_use(&plain.url("localhost", "")).await.unwrap();
    try_use(&plain.url("localhost", "?sslmode=disable"))
        .await
        .unwrap();
}
