#![doc = include_str!("../README.md")]

mod assets;
mod frame;
mod pages;
mod session;
mod state;
mod web;

pub use pages::configure;
pub use pages::{fallback as not_found, status_page};
pub use session::{COOKIE_NAME, SECURE_COOKIE_NAME, SignedIn};
pub use state::{Console, ErrorView, PromptAnswer, PromptRunner, PublicUrl};
pub use web::wants_html;
