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
    /// Change a user's tier.
    SetTier {
        #[arg(long)]
        email: String,
        #[arg(long)]
        tier: String,
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
