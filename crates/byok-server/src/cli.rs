//! Command-line interface. Every subcommand reads the same configuration as `serve`, so it
//! acts on the same database.

use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(
    name = "byok-gateway",
    version,
    about = "BYOK gateway for LLM platforms"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the HTTP service (applies migrations first).
    Serve,
    /// Apply pending database migrations and exit.
    Migrate,
    /// Re-encrypt every stored secret under the first key of ENCRYPTION_KEY.
    RotateKeys {
        /// Rows per batch.
        #[arg(long, default_value_t = 500)]
        batch_size: u32,
    },
    /// Print a new random Fernet key (for ENCRYPTION_KEY).
    GenerateKey,
    /// Print the OpenAPI document.
    Openapi,
    /// Copy provider keys from the legacy service into the configured key store
    /// (idempotent; prints counts, never a key).
    ImportLegacy {
        /// A database holding the legacy `user_provider_keys` table (postgres://… or sqlite://…).
        #[arg(long, value_name = "URL")]
        from_database: Option<String>,
        /// Read the legacy `byok_*` attributes of every user of the Keycloak realm
        /// (needs KEYCLOAK_URL, KEYCLOAK_REALM, KEYCLOAK_CLIENT_SECRET).
        #[arg(long)]
        from_keycloak: bool,
        /// Replace keys the target already holds with a different value.
        #[arg(long)]
        overwrite: bool,
    },
    /// Manage local users.
    User {
        #[command(subcommand)]
        command: UserCommand,
    },
    /// Manage gateway tokens.
    Token {
        #[command(subcommand)]
        command: TokenCommand,
    },
}

#[derive(Debug, Subcommand)]
pub enum UserCommand {
    /// Create a user and print a first token (shown once).
    Create {
        #[arg(long)]
        email: String,
        /// trial, free, starter, professional or enterprise.
        #[arg(long, default_value = "free")]
        tier: String,
    },
    /// Print a new single-use sign-in link for the console.
    LoginLink {
        #[arg(long)]
        email: String,
    },
    /// Give a user the operator role (the console's Administration pages) or take it away.
    SetRole {
        #[arg(long)]
        email: String,
        /// user or operator.
        #[arg(long)]
        role: String,
    },
    /// Disable an account: its tokens, links and console sessions stop working.
    Disable {
        #[arg(long)]
        email: String,
    },
    /// Enable a disabled account again.
    Enable {
        #[arg(long)]
        email: String,
    },
    /// Change a user's tier.
    SetTier {
        #[arg(long)]
        email: String,
        #[arg(long)]
        tier: String,
    },
    /// Move every user of one OIDC issuer to another, when the identity provider's issuer URL
    /// changed but its user ids did not (e.g. a new Keycloak hostname). Prints how many moved.
    RehomeIssuer {
        /// The old issuer, exactly as tokens carried it (`iss`), e.g.
        /// https://old-sso.example.com/realms/byok.
        #[arg(long, value_name = "ISSUER")]
        from: String,
        /// The new issuer, exactly as its tokens carry it.
        #[arg(long, value_name = "ISSUER")]
        to: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum TokenCommand {
    /// Create a token for a user (shown once).
    Create {
        #[arg(long)]
        email: String,
        #[arg(long, default_value = "cli")]
        name: String,
        #[arg(long)]
        expires_in_days: Option<u32>,
    },
    /// List a user's tokens (prefixes only).
    List {
        #[arg(long)]
        email: String,
    },
    /// Revoke a token by id.
    Revoke {
        #[arg(long)]
        email: String,
        #[arg(long)]
        id: String,
    },
}
