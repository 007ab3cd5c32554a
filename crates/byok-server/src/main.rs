use std::process::ExitCode;

use byok_server::cli::{Cli, Command};
use byok_server::commands::{self, Failure};
use byok_server::config::Settings;
use clap::Parser;

fn main() -> ExitCode {
    let cli = Cli::parse();
    byok_server::telemetry::init();
    match cli.command {
        Command::Openapi => {
            print!("{}", byok_server::openapi::to_json());
            return ExitCode::SUCCESS;
        }
        Command::GenerateKey => {
            use secrecy::ExposeSecret;
            println!(
                "{}",
                byok_crypto::FernetKeyRing::generate_key().expose_secret()
            );
            return ExitCode::SUCCESS;
        }
        _ => {}
    }
    let settings = match Settings::from_env() {
        Ok(s) => s,
        Err(e) => {
            eprintln!("error: configuration: {e}");
            return ExitCode::from(2);
        }
    };
    let result = match cli.command {
        Command::Serve => actix_web::rt::System::new().block_on(commands::run_service(settings)),
        other => run_command(settings, other),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(Failure(msg)) => {
            eprintln!("error: {msg}");
            ExitCode::FAILURE
        }
    }
}

fn run_command(settings: Settings, command: Command) -> Result<(), Failure> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    rt.block_on(async move {
        match command {
            Command::Migrate => commands::migrate(settings).await,
            Command::RotateKeys { batch_size } => commands::rotate_keys(settings, batch_size).await,
            Command::ImportLegacy {
                from_database,
                from_keycloak,
                overwrite,
            } => commands::import_legacy(settings, from_database, from_keycloak, overwrite).await,
            Command::User { command } => commands::user(settings, command).await,
            Command::Token { command } => commands::token(settings, command).await,
            Command::Serve | Command::Openapi | Command::GenerateKey => Ok(()),
        }
    })
}
