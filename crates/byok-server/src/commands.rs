//! What each subcommand does.

use actix_web::{HttpServer, web};
use byok_core::ports::UserRepository;
use byok_core::services::{Actor, TokenService, rotate_all, rotate_servers};
use byok_core::{CoreError, Role, Tier, User, normalize_email};
use secrecy::ExposeSecret;

use crate::cli::{TokenCommand, UserCommand};
use crate::config::{AuthMode, KeySource, Settings};
use crate::error::error_chain;
use crate::state::AppState;

/// A failed command: printed as `error: …`, exit status 1.
#[derive(Debug)]
pub struct Failure(pub String);

impl<E: std::error::Error> From<E> for Failure {
    fn from(e: E) -> Self {
        Failure(error_chain(&e))
    }
}

fn core(e: CoreError) -> Failure {
    Failure(error_chain(&e))
}

/// Builds the state and applies migrations.
pub async fn prepare(settings: &Settings) -> Result<AppState, Failure> {
    let state = AppState::build(settings).await?;
    let applied = state.db.migrate().await.map_err(|e| {
        Failure(format!(
            "cannot migrate {}: {}",
            settings.database_display(),
            error_chain(&e)
        ))
    })?;
    if applied > 0 {
        tracing::info!(applied, "database migrations applied");
    }
    Ok(state)
}

pub async fn run_service(settings: Settings) -> Result<(), Failure> {
    crate::error::set_upgrade_url(settings.upgrade_url.clone());
    if let KeySource::File(path) = &settings.key_source {
        tracing::warn!(path = %path.display(), "using the generated encryption key file (embedded mode)");
    }
    let state = prepare(&settings).await?;
    check_encryption_key(&state).await?;
    start_reaper(&settings.docker_sockets);
    if settings.metrics_token.is_none() {
        tracing::info!(
            "GET /metrics answers anyone who reaches this port (set BYOK_METRICS_TOKEN to require a token)"
        );
    }
    // The database's reachability, for /readyz, metrics and the usage writer.
    actix_web::rt::spawn(crate::db_health::monitor(
        state.db_health.clone(),
        state.db.clone(),
    ));
    // Usage records a previous process spooled during an outage are written now.
    let spooled = crate::usage::spool::size(&crate::usage::spool::path_in(&settings.data_dir));
    if spooled > 0 {
        tracing::info!(
            bytes = spooled,
            "usage records spooled by an earlier run are being written to the database"
        );
    }
    state.usage_writer.replay_spool();
    // Ended console sessions and sign-in links are refused when used; this deletes them.
    let sessions = state.sessions.clone();
    actix_web::rt::spawn(async move {
        let mut every = tokio::time::interval(std::time::Duration::from_secs(3600));
        loop {
            every.tick().await;
            match sessions.purge_expired().await {
                Ok(0) => {}
                Ok(n) => tracing::info!(rows = n, "deleted ended console sessions and links"),
                Err(e) => tracing::warn!(error = %e, "could not delete ended console sessions"),
            }
        }
    });
    let listening = state.clone();
    actix_web::rt::spawn(byok_store::listen_invalidations(
        settings.database_url.expose_secret().to_string(),
        move |change| listening.invalidate(change),
    ));
    let data = web::Data::new(state.clone());
    let mut server = HttpServer::new(move || crate::app::build(data.clone()))
        // Small writes (a stream's head, then its first event) go out at once: without
        // TCP_NODELAY, Nagle holds the second until the client's delayed ACK (~40 ms).
        .on_connect(|conn, _| {
            if let Some(tcp) = conn.downcast_ref::<actix_web::rt::net::TcpStream>() {
                let _ = tcp.set_nodelay(true);
            }
        })
        // Signals are handled below (readiness first, then a graceful stop).
        .disable_signals()
        .shutdown_timeout(settings.shutdown_timeout.as_secs())
        // A client that closes its side has gone: cancel its request (and the upstream call)
        // instead of finishing it for nobody.
        .h1_allow_half_closed(false)
        .bind(&settings.bind)
        .map_err(|e| Failure(format!("cannot listen on {}: {e}", settings.bind)))?;
    if let Some(n) = settings.workers {
        server = server.workers(n);
    }
    let mut settings = settings;
    if !settings.public_url_explicit
        && let Some(addr) = server.addrs().first()
    {
        // Derived from the bind address, whose port is known now (port 0 picks one); the
        // configured host stays (a wildcard is reached on loopback).
        settings.public_url = crate::config::derived_public_url(&settings.bind, addr.port());
        state.console.public_url.set(settings.public_url.clone());
        if settings.bind.starts_with("0.0.0.0") || settings.bind.starts_with("[::]") {
            tracing::warn!(
                public_url = %settings.public_url,
                "BYOK_PUBLIC_URL is not set: the console's sign-in links and its same-origin \
                 check use {}; set BYOK_PUBLIC_URL to the address people reach this service at",
                settings.public_url
            );
        }
    }
    // After binding, so that the printed sign-in link carries the real address.
    if settings.auth_mode == AuthMode::Keycloak {
        println!("AUTH_MODE=keycloak: sign in through Keycloak; no local admin is created.");
    } else if !settings.bootstrap_admin {
        println!("BYOK_BOOTSTRAP_ADMIN=false: create users with `byok-gateway user create`.");
    } else {
        bootstrap_admin(&state, &settings).await?;
    }
    for addr in server.addrs() {
        tracing::info!(%addr, database = %settings.database_display(), "listening");
        println!("BYOK gateway listening on http://{addr}");
    }
    println!("Console: {}/", state.console.public_url.get());
    let server = server.run();
    let handle = server.handle();
    let draining = state.draining.clone();
    let drain_delay = settings.shutdown_drain_delay;
    actix_web::rt::spawn(async move {
        let signal = shutdown_signal().await;
        tracing::info!(
            signal,
            drain_delay_secs = drain_delay.as_secs(),
            "shutting down: readiness off, finishing in-flight requests"
        );
        draining.store(true, std::sync::atomic::Ordering::Relaxed);
        // Load balancers (a Kubernetes Service) need a moment to see the failing readiness
        // before the listener closes; in-flight requests and streams then get the timeout.
        let graceful = async {
            tokio::time::sleep(drain_delay).await;
            handle.stop(true).await;
        };
        tokio::select! {
            () = graceful => {}
            second = shutdown_signal() => {
                // Someone asked twice (Ctrl-C again): stop now, without waiting for clients.
                tracing::warn!(signal = second, "second signal: exiting without waiting");
                std::process::exit(1);
            }
        }
    });
    server.await?;
    state
        .usage_writer
        .flush_and_stop(std::time::Duration::from_secs(10))
        .await;
    tracing::info!("stopped");
    Ok(())
}

/// Waits for SIGTERM or SIGINT; returns its name.
async fn shutdown_signal() -> &'static str {
    use tokio::signal::unix::{SignalKind, signal};
    match (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) {
        (Ok(mut term), Ok(mut int)) => tokio::select! {
            _ = term.recv() => "SIGTERM",
            _ = int.recv() => "SIGINT",
        },
        _ => {
            tracing::warn!("cannot listen for signals; stop with SIGKILL only");
            std::future::pending().await
        }
    }
}

/// Refuses to start with an `ENCRYPTION_KEY` that decrypts none of the stored keys (a wrong
/// key, or a lost key file replaced by a generated one): serving would answer every use of a
/// stored key with an error. Some unreadable keys only earn a warning (rotate-keys reports them).
async fn check_encryption_key(state: &AppState) -> Result<(), Failure> {
    let (sampled, readable) = state
        .vault
        .check_cipher(state.keys.as_ref(), 50)
        .await
        .map_err(core)?;
    if sampled > 0 && readable == 0 {
        return Err(Failure(format!(
            "invalid ENCRYPTION_KEY: it decrypts none of the {sampled} stored key(s) sampled. \
             It is not the key the data was written with (was the key file replaced, or the \
             variable changed?). Restore the right key; to move to a new key, list it first \
             and keep the old one after it, then run rotate-keys."
        )));
    }
    if readable < sampled {
        tracing::warn!(
            sampled,
            readable,
            "some stored keys cannot be decrypted with ENCRYPTION_KEY; run rotate-keys for a report"
        );
    }
    Ok(())
}

/// Every 10 minutes, removes managed containers older than the longest command (plus a
/// margin) from each Docker socket the operator allows: what a crash left behind.
fn start_reaper(sockets: &[String]) {
    for socket in sockets {
        let socket = socket.clone();
        actix_web::rt::spawn(async move {
            loop {
                if let Ok(docker) = byok_exec::docker_client(&socket) {
                    let removed = byok_exec::DockerBackend::reap(
                        &docker,
                        std::time::Duration::from_secs(
                            byok_core::execution::MAX_EXEC_TIMEOUT_SECS + 60,
                        ),
                    )
                    .await;
                    if removed > 0 {
                        tracing::info!(removed, "removed containers left behind");
                    }
                }
                tokio::time::sleep(std::time::Duration::from_secs(600)).await;
            }
        });
    }
}

/// On an empty database: creates the first user (enterprise tier) and prints its token once.
async fn bootstrap_admin(state: &AppState, settings: &Settings) -> Result<(), Failure> {
    let email = &settings.bootstrap_admin_email;
    if state.tokens.users().count().await? > 0 {
        println!(
            "Create a token for an existing user with: byok-gateway token create --email {email}"
        );
        return Ok(());
    }
    let user = match state.tokens.create_user(email, Tier::Enterprise).await {
        Ok(u) => u,
        // Another replica bootstrapped at the same moment.
        Err(CoreError::Conflict { .. }) => return Ok(()),
        Err(e) => return Err(core(e)),
    };
    let issued = state
        .tokens
        .issue(user.id, "bootstrap", None)
        .await
        .map_err(core)?;
    // The first user runs the service: an operator.
    UserRepository::set_role(&state.db, user.id, Role::Operator).await?;
    let link = login_link(state, settings, user.id).await?;
    let token = issued.token.expose_secret();
    let expiry = expiry(&issued.record);
    let base = &settings.public_url;
    println!(
        "\n================================================================\n\
         First start: created the user {email} (tier enterprise, operator).\n\
         Sign in to the console with this link ({link_note}):\n\n    {link}\n\n\
         Its gateway token ({expiry}) is shown this once:\n\n    {token}\n\n\
         Try:   curl -H \"Authorization: Bearer {token}\" {base}/api/v1/byok/providers\n\
         More users:  byok-gateway user create --email you@example.com --tier starter\n\
         A new link:  byok-gateway user login-link --email {email}\n\
         ================================================================\n",
        link = link.0,
        link_note = link.1,
    );
    Ok(())
}

pub async fn import_legacy(
    settings: Settings,
    from_database: Option<String>,
    from_keycloak: bool,
    overwrite: bool,
) -> Result<(), Failure> {
    if from_database.is_none() && !from_keycloak {
        return Err(Failure(
            "say where to import from: --from-database URL and/or --from-keycloak".into(),
        ));
    }
    let state = prepare(&settings).await?;
    let ring = settings.key_ring()?;
    let issuer = settings
        .keycloak
        .as_ref()
        .map(|k| format!("{}/realms/{}", k.url, k.realm))
        .unwrap_or_else(|| "legacy".into());
    let mut rows = Vec::new();
    if let Some(url) = from_database {
        let legacy = byok_store::Database::connect(&url, &byok_store::DbOptions::default())
            .await
            .map_err(|e| Failure(format!("legacy database: {}", error_chain(&e))))?;
        let found = legacy.legacy_keys().await.map_err(|e| {
            Failure(format!(
                "legacy table user_provider_keys: {}",
                error_chain(&e)
            ))
        })?;
        println!("import-legacy: {} row(s) in the legacy table", found.len());
        rows.extend(found);
    }
    if from_keycloak {
        let admin = settings
            .keycloak
            .clone()
            .map(byok_keycloak::AdminClient::new)
            .transpose()
            .map_err(|e| Failure(e.to_string()))?
            .flatten()
            .ok_or_else(|| {
                Failure(
                    "--from-keycloak needs KEYCLOAK_URL, KEYCLOAK_REALM and KEYCLOAK_CLIENT_SECRET"
                        .into(),
                )
            })?;
        let found = byok_keycloak::legacy_keys_in_realm(&admin)
            .await
            .map_err(|e| Failure(e.to_string()))?;
        println!(
            "import-legacy: {} key(s) in Keycloak attributes",
            found.len()
        );
        rows.extend(found);
    }
    let r = byok_core::services::import_legacy_keys(
        rows,
        state.keys.as_ref(),
        &ring,
        &issuer,
        overwrite,
    )
    .await
    .map_err(core)?;
    println!(
        "import-legacy: read={} imported={} unchanged={} kept_existing={} disabled={} invalid={} undecryptable={}",
        r.read, r.imported, r.unchanged, r.kept_existing, r.disabled, r.invalid, r.undecryptable
    );
    if r.undecryptable > 0 {
        return Err(Failure(format!(
            "{} key(s) could not be decrypted: add the legacy ENCRYPTION_KEY to ENCRYPTION_KEY \
             (after the current key) and run the import again",
            r.undecryptable
        )));
    }
    Ok(())
}

pub async fn migrate(settings: Settings) -> Result<(), Failure> {
    let state = AppState::build(&settings).await?;
    let applied = state.db.migrate().await?;
    println!("migrations applied: {applied}");
    Ok(())
}

pub async fn rotate_keys(settings: Settings, batch_size: u32) -> Result<(), Failure> {
    let state = prepare(&settings).await?;
    let ring = settings.key_ring()?;
    let keys = rotate_all(state.keys.as_ref(), &ring, batch_size)
        .await
        .map_err(core)?;
    println!(
        "rotate-keys: provider keys: processed={} rotated={} already_current={} changed_meanwhile={} failed={}",
        keys.processed, keys.rotated, keys.current, keys.raced, keys.failed
    );
    let servers = rotate_servers(&state.db, &ring, batch_size)
        .await
        .map_err(core)?;
    println!(
        "rotate-keys: execution servers: processed={} rotated={} already_current={} changed_meanwhile={} failed={}",
        servers.processed, servers.rotated, servers.current, servers.raced, servers.failed
    );
    let failed = keys.failed + servers.failed;
    if failed > 0 {
        return Err(Failure(format!(
            "{failed} stored secret(s) could not be decrypted with any key in ENCRYPTION_KEY; \
             their ids are in the log above. Restore the missing key to rotate them."
        )));
    }
    Ok(())
}

async fn find_user(tokens: &TokenService, email: &str) -> Result<User, Failure> {
    let email = normalize_email(email).map_err(core)?;
    tokens
        .users()
        .find_by_email(&email)
        .await?
        .ok_or_else(|| Failure(format!("no user with email {email}")))
}

fn parse_tier(t: &str) -> Result<Tier, Failure> {
    t.parse().map_err(core)
}

/// A new single-use sign-in link for `user`, and when it expires (for people).
async fn login_link(
    state: &AppState,
    settings: &Settings,
    user: byok_core::UserId,
) -> Result<(String, String), Failure> {
    let link = state.sessions.issue_link(user).await.map_err(core)?;
    Ok((
        format!(
            "{}/login/{}",
            settings.public_url,
            link.secret.expose_secret()
        ),
        format!(
            "single use, until {}",
            link.expires_at.format("%Y-%m-%d %H:%M UTC")
        ),
    ))
}

/// When a token expires, for people.
fn expiry(token: &byok_core::GatewayToken) -> String {
    match token.expires_at {
        Some(at) => format!("expires {}", at.format("%Y-%m-%d %H:%M UTC")),
        None => "never expires".into(),
    }
}

pub async fn user(settings: Settings, cmd: UserCommand) -> Result<(), Failure> {
    let state = prepare(&settings).await?;
    match cmd {
        UserCommand::Create { email, tier } => {
            let tier = parse_tier(&tier)?;
            let user = state.tokens.create_user(&email, tier).await.map_err(core)?;
            let issued = state
                .tokens
                .issue(user.id, "cli", None)
                .await
                .map_err(core)?;
            println!(
                "created user {} (id {}, tier {})",
                user.email, user.id, user.tier
            );
            println!("token: {}", issued.token.expose_secret());
            println!(
                "(the token is shown once; store it now; it {})",
                expiry(&issued.record)
            );
            let (link, note) = login_link(&state, &settings, user.id).await?;
            println!("sign-in link ({note}): {link}");
        }
        UserCommand::LoginLink { email } => {
            let user = find_user(&state.tokens, &email).await?;
            let (link, note) = login_link(&state, &settings, user.id).await?;
            println!("sign-in link for {} ({note}):", user.email);
            println!("{link}");
        }
        UserCommand::SetRole { email, role } => {
            let role: Role = role.parse().map_err(core)?;
            let user = find_user(&state.tokens, &email).await?;
            state
                .admin
                .set_role(Actor::Host, user.id, role)
                .await
                .map_err(core)?;
            println!("{} is now {role}", user.email);
        }
        UserCommand::Disable { email } => {
            let user = find_user(&state.tokens, &email).await?;
            // The console's administration page does the same (core `Administration`).
            let ended = state
                .admin
                .set_disabled(Actor::Host, user.id, true)
                .await
                .map_err(core)?;
            println!(
                "{} is disabled: its tokens and sign-in links are refused, {ended} console \
                 session(s) ended (other processes see it within BYOK_AUTH_CACHE_TTL_SECS)",
                user.email
            );
        }
        UserCommand::Enable { email } => {
            let user = find_user(&state.tokens, &email).await?;
            state
                .admin
                .set_disabled(Actor::Host, user.id, false)
                .await
                .map_err(core)?;
            println!("{} is enabled again", user.email);
        }
        UserCommand::SetTier { email, tier } => {
            let tier = parse_tier(&tier)?;
            let user = find_user(&state.tokens, &email).await?;
            state
                .admin
                .set_tier(Actor::Host, user.id, tier)
                .await
                .map_err(core)?;
            println!(
                "{} is now {tier} (running services on PostgreSQL see it at once, others within \
                 BYOK_AUTH_CACHE_TTL_SECS)",
                user.email
            );
        }
        UserCommand::RehomeIssuer { from, to } => {
            for issuer in [&from, &to] {
                if !(issuer.starts_with("https://") || issuer.starts_with("http://")) {
                    return Err(Failure(format!(
                        "{issuer:?} is not an issuer URL (e.g. https://sso.example.com/realms/byok)"
                    )));
                }
            }
            let moved = UserRepository::rehome_issuer(&state.db, &from, &to).await?;
            println!("rehome-issuer: moved={moved} from={from} to={to}");
            if moved == 0 {
                println!(
                    "(no user had the origin {from}; the issuer must match exactly, as the \
                     `iss` claim of its tokens)"
                );
            }
        }
    }
    Ok(())
}

pub async fn token(settings: Settings, cmd: TokenCommand) -> Result<(), Failure> {
    let state = prepare(&settings).await?;
    match cmd {
        TokenCommand::Create {
            email,
            name,
            expires_in_days,
        } => {
            let user = find_user(&state.tokens, &email).await?;
            let issued = state
                .tokens
                .issue(user.id, &name, expires_in_days)
                .await
                .map_err(core)?;
            println!("token id {} for {}", issued.record.id, user.email);
            println!("token: {}", issued.token.expose_secret());
            println!(
                "(the token is shown once; store it now; it {})",
                expiry(&issued.record)
            );
        }
        TokenCommand::List { email } => {
            let user = find_user(&state.tokens, &email).await?;
            let now = chrono::Utc::now();
            println!(
                "{:<36}  {:<14}  {:<20}  {:<8}  name",
                "id", "prefix", "created", "state"
            );
            for t in state.tokens.list(user.id).await.map_err(core)? {
                let st = if t.revoked_at.is_some() {
                    "revoked"
                } else if t.is_active(now) {
                    "active"
                } else {
                    "expired"
                };
                println!(
                    "{:<36}  {:<14}  {:<20}  {:<8}  {}",
                    t.id,
                    t.prefix,
                    t.created_at.format("%Y-%m-%d %H:%M:%S"),
                    st,
                    t.name
                );
            }
        }
        TokenCommand::Revoke { email, id } => {
            let user = find_user(&state.tokens, &email).await?;
            let id =
                uuid::Uuid::parse_str(&id).map_err(|_| Failure("--id must be a UUID".into()))?;
            state.tokens.revoke(user.id, id).await.map_err(core)?;
            println!("token {id} revoked");
        }
    }
    Ok(())
}
