//! npm's `oauth2-mock-server` (installed into `tests/oidc` by `make test`), started per test
//! with Keycloak's URL layout (`tests/oidc/server.mjs`).

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};

use serde_json::Value;

pub struct MockOidc {
    pub url: String,
    child: Child,
    http: reqwest::Client,
}

impl MockOidc {
    /// `None` when the npm package is not installed.
    pub fn start() -> Option<Self> {
        let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("oidc");
        if !dir.join("node_modules/oauth2-mock-server").exists() {
            return None;
        }
        let mut child = Command::new("node")
            .arg(dir.join("server.mjs"))
            .arg(crate::keycloak::REALM)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("node");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let v: Value = serde_json::from_str(&line).expect("the server's first line");
        Some(Self {
            url: v["url"].as_str().unwrap().to_string(),
            child,
            http: crate::http_client().build().unwrap(),
        })
    }

    /// A token from the server's token endpoint with `claims` merged in.
    pub async fn token(&self, claims: Value) -> String {
        let r: Value = self
            .http
            .post(format!(
                "{}/realms/{}/protocol/openid-connect/token",
                self.url,
                crate::keycloak::REALM
            ))
            .form(&[
                ("grant_type", "client_credentials"),
                ("client_id", "tests"),
                ("claims", &claims.to_string()),
            ])
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        r["access_token"].as_str().unwrap().to_string()
    }

    /// The claims of the access tokens the next authorization codes are exchanged for.
    pub async fn login_claims(&self, claims: Value) {
        let r = self
            .http
            .post(format!("{}/control/login-claims", self.url))
            .json(&claims)
            .send()
            .await
            .unwrap();
        assert!(r.status().is_success());
    }

    /// Adds a signing key; the server then signs with its keys in turn.
    pub async fn rotate(&self) {
        let r = self
            .http
            .post(format!("{}/control/rotate", self.url))
            .send()
            .await
            .unwrap();
        assert!(r.status().is_success());
    }
}

impl Drop for MockOidc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
