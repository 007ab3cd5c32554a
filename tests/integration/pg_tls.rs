//! `sslmode` / `sslrootcert` against a real PostgreSQL with TLS: a throwaway cluster
//! (tests/src/pg.rs) whose pg_hba.conf accepts TLS connections only, with certificates made
//! here, and one without TLS.

use std::time::Duration;

use byok_core::ports::{ChangeNotifier, Invalidation};
use byok_store::{Database, DbOptions, listen_invalidations};
use byok_tests::pg::{PgCluster, PgTls};
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose};

/// `postgres://postgres:s3cret-pw@{host}:{port}/postgres{query}` (the password is only there to
/// be looked for in error messages: the cluster trusts every local connection).
fn url(pg: &PgCluster, host: &str, query: &str) -> String {
    format!(
        "postgres://postgres:s3cret-pw@{host}:{}/postgres{query}",
        pg.port()
    )
}

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
    let (ca_pem, issuer) = ca("byok pg test CA");
    let mut leaf = CertificateParams::new(vec!["localhost".to_string()]).unwrap();
    leaf.distinguished_name
        .push(DnType::CommonName, "localhost");
    let leaf_key = KeyPair::generate().unwrap();
    let leaf_cert = leaf.signed_by(&leaf_key, &issuer).unwrap();
    let pg = PgCluster::start_tls(&PgTls {
        ca_pem: ca_pem.clone(),
        cert_pem: leaf_cert.pem(),
        key_pem: leaf_key.serialize_pem(),
    });
    let files = tempfile::tempdir().unwrap();

    let (other_ca_pem, _) = ca("some other CA");
    let other_ca = files.path().join("other-ca.pem");
    std::fs::write(&other_ca, other_ca_pem).unwrap();
    let ca_file = files.path().join("ca.pem");
    std::fs::write(&ca_file, &ca_pem).unwrap();
    assert!(pg.ca_file().exists());
    let ca_file = ca_file.display().to_string();
    let other_file = other_ca.display().to_string();

    // verify-full, the test CA, the name in the certificate: pool, migrations, LISTEN/NOTIFY.
    let good = url(
        &pg,
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
    let e = fails(&url(
        &pg,
        "localhost",
        &format!("?sslmode=verify-full&sslrootcert={other_file}"),
    ))
    .await;
    assert!(e.contains("UnknownIssuer"), "{e}");
    assert!(e.contains("sslmode=verify-full"), "{e}");

    // verify-full to 127.0.0.1, a name the certificate does not carry.
    let e = fails(&url(
        &pg,
        "127.0.0.1",
        &format!("?sslmode=verify-full&sslrootcert={ca_file}"),
    ))
    .await;
    assert!(e.contains("not valid for name \"127.0.0.1\""), "{e}");

    // verify-ca checks the chain but not the name.
    try_use(&url(
        &pg,
        "127.0.0.1",
        &format!("?sslmode=verify-ca&sslrootcert={ca_file}"),
    ))
    .await
    .unwrap();
    let e = fails(&url(
        &pg,
        "127.0.0.1",
        &format!("?sslmode=verify-ca&sslrootcert={other_file}"),
    ))
    .await;
    assert!(e.contains("UnknownIssuer"), "{e}");

    // verify-ca / verify-full without sslrootcert are refused at start (as libpq does without
    // root.crt), never checked against public roots that anyone's certificate chains to.
    for (host, mode) in [("127.0.0.1", "verify-ca"), ("localhost", "verify-full")] {
        let e = fails(&url(&pg, host, &format!("?sslmode={mode}"))).await;
        assert!(
            e.contains(&format!("sslmode={mode} needs sslrootcert=PATH")),
            "{e}"
        );
    }
    let e = fails(&url(
        &pg,
        "127.0.0.1",
        "?sslmode=verify-ca&sslrootcert=system",
    ))
    .await;
    assert!(
        e.contains("sslrootcert=system needs sslmode=verify-full"),
        "{e}"
    );
    // verify-full against the public roots: this server's private CA is not among them.
    let e = fails(&url(
        &pg,
        "localhost",
        "?sslmode=verify-full&sslrootcert=system",
    ))
    .await;
    assert!(e.contains("UnknownIssuer"), "{e}");

    // require without a CA takes the certificate as it is; with one it checks the chain (libpq).
    try_use(&url(&pg, "127.0.0.1", "?sslmode=require"))
        .await
        .unwrap();
    let e = fails(&url(
        &pg,
        "127.0.0.1",
        &format!("?sslmode=require&sslrootcert={other_file}"),
    ))
    .await;
    assert!(e.contains("UnknownIssuer"), "{e}");

    // No sslmode is libpq's `prefer`: TLS when offered (and here only TLS gets in).
    try_use(&url(&pg, "localhost", "")).await.unwrap();
    try_use(&url(
        &pg,
        "localhost",
        "?sslmode=prefer&application_name=byok",
    ))
    .await
    .unwrap();

    // disable: plain, which this server refuses.
    let e = fails(&url(&pg, "127.0.0.1", "?sslmode=disable")).await;
    assert!(e.contains("no encryption"), "{e}");

    // An unknown sslmode fails at start, naming the allowed values and not the URL.
    let e = fails(&url(&pg, "localhost", "?sslmode=verify-everything")).await;
    assert!(
        e.contains("disable, prefer, require, verify-ca, verify-full"),
        "{e}"
    );
    assert!(!e.contains("s3cret-pw") && !e.contains("localhost"), "{e}");
    drop(db);
    drop(pg);

    // A server without TLS: require and verify-full refuse it, prefer falls back to plain.
    let plain = PgCluster::start();
    let e = fails(&url(&plain, "localhost", "?sslmode=require")).await;
    assert!(e.contains("server does not support TLS"), "{e}");
    let e = fails(&url(
        &plain,
        "localhost",
        &format!("?sslmode=verify-full&sslrootcert={}", ca_file),
    ))
    .await;
    assert!(e.contains("server does not support TLS"), "{e}");
    try_use(&url(&plain, "localhost", "")).await.unwrap();
    try_use(&url(&plain, "localhost", "?sslmode=disable"))
        .await
        .unwrap();
}
