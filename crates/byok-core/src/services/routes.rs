//! Per-request resolution for the LLM gateway: which provider, which model name, whose key.

use std::sync::Arc;
use std::time::Duration;

use crate::domain::*;
use crate::error::CoreError;
use crate::ports::SettingsRepository;
use crate::ports::{ChangeNotifier, Invalidation};
use crate::routing::{ModelRouter, RoutedModel, known_models};
use crate::services::KeyVault;
use crate::services::cache::{StaleIfError, StaleKind, TtlCache};
use crate::services::invalidation::NoNotifier;

/// The operator's system default (`DEFAULT_LLM_PROVIDER`, `DEFAULT_LLM_API_KEY`).
#[derive(Debug, Clone)]
pub struct SystemDefault {
    pub provider: ProviderId,
    /// `None`: no system credential (only Ollama works without one).
    pub api_key: Option<ApiKey>,
}

/// One way to serve a request.
#[derive(Debug, Clone)]
pub struct Route {
    pub provider: ProviderId,
    /// The model name to send upstream.
    pub model: String,
    pub credential: CredentialKind,
    /// `None` only for providers that take no key (a system Ollama).
    pub api_key: Option<ApiKey>,
    /// The user's endpoint for `custom`/`ollama` keys (subject to the target policy).
    pub endpoint: Option<String>,
    /// The platform's key, tried after the user's own key failed ([`Resolution::fallback`]).
    pub fallback: bool,
}

/// The routes for one request: the primary and, per the user's policy, a fallback.
#[derive(Debug, Clone)]
pub struct Resolution {
    pub primary: Route,
    /// Set when the primary is the user's key and their policy is `user_then_system`.
    pub fallback: Option<Route>,
}

/// Which credential a request for a model would use, as a person is shown it: never a key,
/// only the stored label and preview of the user's own one ([`RouteResolver::summarize`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteSummary {
    /// The provider that would be called.
    pub provider: ProviderId,
    /// The model name sent upstream.
    pub model: String,
    pub credential: CredentialKind,
    /// The label of the user's key (own key only).
    pub key_label: Option<String>,
    /// The stored preview of the user's key (own key only).
    pub key_preview: Option<KeyPreview>,
    /// Whether a refused own key would be retried once on the platform's key.
    pub fallback: bool,
}

impl RouteSummary {
    /// The badge shown beside a prompt, the one wording of it (the console and
    /// `GET /api/v1/byok/resolve` both show this): "Using your OpenAI key (work …1234)",
    /// without the parts the key lacks (no label: "(…1234)"; a preview that hides the end:
    /// "(work)"; neither: no parentheses), or "Using the platform's key".
    pub fn badge(&self) -> String {
        match self.credential {
            CredentialKind::System => "Using the platform's key".to_string(),
            CredentialKind::User => {
                let mut out = format!("Using your {} key", self.provider.display_name());
                let label = self
                    .key_label
                    .as_deref()
                    .map(str::trim)
                    .filter(|l| !l.is_empty());
                let tail = self
                    .key_preview
                    .as_ref()
                    .and_then(KeyPreview::tail)
                    .map(|t| format!("\u{2026}{t}"));
                let parts: Vec<String> =
                    label.map(str::to_string).into_iter().chain(tail).collect();
                if !parts.is_empty() {
                    out.push_str(" (");
                    out.push_str(&parts.join(" "));
                    out.push(')');
                }
                out
            }
        }
    }
}

/// A model the caller can reach, with the provider and credential that would serve it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReachableModel {
    /// The name to request (`provider/*` for Custom and Ollama, whose models are the user's).
    pub id: String,
    pub provider: ProviderId,
    pub credential: CredentialKind,
}

/// Upstream statuses after which a user's key may fall back to the system default.
pub fn is_fallback_status(status: u16) -> bool {
    matches!(status, 401 | 403 | 429)
}

const MAX_CACHED_SETTINGS: usize = 100_000;

/// Per-request route resolution for the gateway (`/v1/*`): the model name through the
/// [`ModelRouter`], then the user's cached credential (tier permitting) or the system default,
/// plus a fallback route per the user's policy (cached settings, stale-if-error).
pub struct RouteResolver {
    vault: KeyVault,
    router: ModelRouter,
    system: SystemDefault,
    settings: Arc<dyn SettingsRepository>,
    /// A change invalidates the entry (and a read that started before it does not store its
    /// answer); while the store cannot be read the last answer stands (stale-if-error).
    settings_cache: TtlCache<UserId, UserSettings>,
    settings_ttl: Duration,
    stale: Arc<StaleIfError>,
    notifier: Arc<dyn ChangeNotifier>,
}

impl std::fmt::Debug for RouteResolver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RouteResolver")
            .field("system_provider", &self.system.provider)
            .finish_non_exhaustive()
    }
}

impl RouteResolver {
    /// A resolver over `vault` for user keys, `router` for model names, `system` as the default
    /// credential, and the users' fallback settings (cached for `settings_ttl`).
    pub fn new(
        vault: KeyVault,
        router: ModelRouter,
        system: SystemDefault,
        settings: Arc<dyn SettingsRepository>,
        settings_ttl: Duration,
    ) -> Self {
        let stale = Arc::new(StaleIfError::default());
        Self {
            vault,
            router,
            system,
            settings,
            settings_cache: TtlCache::new(settings_ttl, stale.max_age(), MAX_CACHED_SETTINGS),
            settings_ttl,
            stale,
            notifier: Arc::new(NoNotifier),
        }
    }

    /// The operator's system default.
    pub fn system(&self) -> &SystemDefault {
        &self.system
    }

    /// The model router.
    pub fn router(&self) -> &ModelRouter {
        &self.router
    }

    /// Resolves a request for `requested` by `who`.
    ///
    /// 1. Route the model name ([`ModelRouter::route`]).
    /// 2. If the user may use BYOK (tier `starter`+) and stored an enabled key for that
    ///    provider, the primary route uses it; with policy `user_then_system` the system default
    ///    is the fallback.
    /// 3. Otherwise the system default serves it, with the model renamed to its naming.
    ///
    /// Errors: invalid or unknown model; `no_credential` (503) when neither the user nor the
    /// system has a credential for it.
    pub async fn resolve(&self, who: &Principal, requested: &str) -> Result<Resolution, CoreError> {
        let routed = self.router.route(requested)?;
        let user = match routed.provider {
            Some(p) => self.vault.resolve(who, p).await?,
            None => None,
        };
        match user {
            Some(cred) => {
                let fallback = match self.settings(who).await?.fallback_policy {
                    FallbackPolicy::UserThenSystem => {
                        self.system_route(&routed, requested).ok().map(|r| Route {
                            fallback: true,
                            ..r
                        })
                    }
                    FallbackPolicy::UserOnly => None,
                };
                Ok(Resolution {
                    primary: Route {
                        provider: cred.provider,
                        model: routed.model,
                        credential: CredentialKind::User,
                        api_key: Some(cred.key),
                        endpoint: cred.endpoint,
                        fallback: false,
                    },
                    fallback,
                })
            }
            None => {
                // Custom and Ollama models exist only behind the user's own endpoint.
                if let Some(p @ (ProviderId::Custom | ProviderId::Ollama)) = routed.provider
                    && p != self.system.provider
                {
                    who.tier.require(Tier::BYOK_MINIMUM)?;
                    return Err(CoreError::NotFound {
                        code: "key_not_found",
                        message: format!(
                            "no {} key is stored for you; add one with an endpoint first",
                            p.display_name()
                        ),
                    });
                }
                Ok(Resolution {
                    primary: self.system_route(&routed, requested)?,
                    fallback: None,
                })
            }
        }
    }

    fn system_route(&self, routed: &RoutedModel, requested: &str) -> Result<Route, CoreError> {
        let model = self
            .router
            .system_model(routed, self.system.provider, requested)?;
        if self.system.api_key.is_none() && self.system.provider != ProviderId::Ollama {
            let provider = routed.provider.unwrap_or(self.system.provider);
            return Err(CoreError::Unavailable {
                code: "no_credential",
                message: format!(
                    "no {} key is stored for you and the service has no system default \
                     configured; add your own key under /api/v1/byok/keys/add",
                    provider.display_name()
                ),
            });
        }
        Ok(Route {
            provider: self.system.provider,
            model,
            credential: CredentialKind::System,
            api_key: self.system.api_key.clone(),
            endpoint: None,
            fallback: false,
        })
    }

    /// The user's settings (cached for the settings TTL; defaults when never saved; the last
    /// answer, within the stale-if-error bound, when the store cannot be read).
    pub async fn settings(&self, who: &Principal) -> Result<UserSettings, CoreError> {
        let generation = match self.settings_cache.lookup(&who.user_id) {
            Ok(s) => return Ok(s),
            Err(generation) => generation,
        };
        let s = match self.settings.get_settings(who.user_id).await {
            Ok(s) => {
                self.stale.answered();
                s.unwrap_or_default()
            }
            Err(e) => {
                return match self.settings_cache.stale(&who.user_id) {
                    Some(s) => {
                        self.stale.serving(StaleKind::Settings, &e);
                        Ok(s)
                    }
                    None => Err(e.into()),
                };
            }
        };
        self.settings_cache.store(who.user_id, s, generation);
        Ok(s)
    }

    /// Saves the user's settings; effective at once in this process.
    pub async fn set_settings(
        &self,
        who: &Principal,
        settings: UserSettings,
    ) -> Result<UserSettings, CoreError> {
        self.settings.put_settings(who.user_id, &settings).await?;
        self.settings_cache.put(who.user_id, settings);
        self.notifier
            .publish(Invalidation::Settings { user: who.user_id })
            .await;
        Ok(settings)
    }

    /// Drops a user's cached settings (changed by another replica).
    pub fn forget_settings(&self, user: UserId) {
        self.settings_cache.invalidate(&user);
    }

    /// Drops every cached setting.
    pub fn forget_all(&self) {
        self.settings_cache.clear();
    }

    /// How old cached settings may be when they are used because the store cannot be read
    /// (shared with the other caches of the process).
    pub fn with_stale_if_error(mut self, stale: Arc<StaleIfError>) -> Self {
        self.settings_cache =
            TtlCache::new(self.settings_ttl, stale.max_age(), MAX_CACHED_SETTINGS);
        self.stale = stale;
        self
    }

    /// Tells other replicas about settings changes (see [`ChangeNotifier`]).
    pub fn with_notifier(mut self, notifier: Arc<dyn ChangeNotifier>) -> Self {
        self.notifier = notifier;
        self
    }

    /// What a request for `requested` by `who` would use, without a key: [`Self::resolve`]
    /// (so the same refusals: an invalid or unknown model, a tier refusal, `no_credential`),
    /// then the stored label and preview of the user's key when it serves.
    pub async fn summarize(
        &self,
        who: &Principal,
        requested: &str,
    ) -> Result<RouteSummary, CoreError> {
        let res = self.resolve(who, requested).await?;
        let primary = res.primary;
        let (key_label, key_preview) = match primary.credential {
            CredentialKind::User => self
                .vault
                .list(who)
                .await?
                .into_iter()
                .find(|k| k.provider == primary.provider)
                .map_or((None, None), |k| (k.label, Some(k.key_preview))),
            CredentialKind::System => (None, None),
        };
        Ok(RouteSummary {
            provider: primary.provider,
            model: primary.model,
            credential: primary.credential,
            key_label,
            key_preview,
            fallback: res.fallback.is_some(),
        })
    }

    /// The models the caller can reach: the well-known models ([`known_models`]) of every
    /// provider [`Self::reachable`] names (`provider/*` for Custom and Ollama), each once, with
    /// the credential that would serve it.
    pub async fn reachable_models(
        &self,
        who: &Principal,
    ) -> Result<Vec<ReachableModel>, CoreError> {
        let mut out: Vec<ReachableModel> = Vec::new();
        for (provider, credential) in self.reachable(who).await? {
            let names: Vec<String> = match provider {
                ProviderId::Ollama | ProviderId::Custom => {
                    vec![format!("{}/*", provider.as_str())]
                }
                _ => known_models(provider)
                    .iter()
                    .map(|m| (*m).to_string())
                    .collect(),
            };
            for id in names {
                if !out.iter().any(|m| m.id == id) {
                    out.push(ReachableModel {
                        id,
                        provider,
                        credential,
                    });
                }
            }
        }
        Ok(out)
    }

    /// Providers the caller can reach, with the credential that would serve them: every
    /// provider they hold a usable key for (tier permitting), plus the system default.
    pub async fn reachable(
        &self,
        who: &Principal,
    ) -> Result<Vec<(ProviderId, CredentialKind)>, CoreError> {
        let mut out = Vec::new();
        if who.tier.allows(Tier::BYOK_MINIMUM) {
            for p in self.vault.stored_providers(who).await? {
                out.push((p, CredentialKind::User));
            }
        }
        let system_usable =
            self.system.api_key.is_some() || self.system.provider == ProviderId::Ollama;
        if system_usable && !out.iter().any(|(p, _)| *p == self.system.provider) {
            out.push((self.system.provider, CredentialKind::System));
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use secrecy::{ExposeSecret, SecretString};

    use super::*;
    use crate::services::AddKey;
    use crate::testing::{AlwaysValid, MemKeys, MemSettings, ToyCipher};

    const USER_KEY: &str = "sk-proj-0123456789abcdefghij";
    const SYSTEM_KEY: &str = "sk-or-v1-0123456789abcdefghijkl";

    fn who(tier: Tier) -> Principal {
        Principal {
            user_id: UserId::new_random(),
            email: "u@example.com".into(),
            tier,
            token_id: None,
        }
    }

    fn resolver(settings: Arc<MemSettings>) -> (RouteResolver, KeyVault) {
        let vault = KeyVault::new(
            Arc::new(MemKeys::new()),
            Arc::new(ToyCipher),
            Arc::new(AlwaysValid),
        );
        let system = SystemDefault {
            provider: ProviderId::Openrouter,
            api_key: Some(ApiKey::parse(ProviderId::Openrouter, SYSTEM_KEY).unwrap()),
        };
        let r = RouteResolver::new(
            vault.clone(),
            ModelRouter::new(HashMap::new()),
            system,
            settings,
            Duration::from_secs(30),
        );
        (r, vault)
    }

    async fn add_openai_key(vault: &KeyVault, who: &Principal) {
        vault
            .add(
                who,
                AddKey {
                    provider: ProviderId::Openai,
                    key: SecretString::from(USER_KEY),
                    label: None,
                    endpoint: None,
                },
            )
            .await
            .unwrap();
    }

    #[tokio::test]
    async fn the_users_key_serves_and_the_fallback_follows_their_policy() {
        let settings = Arc::new(MemSettings::new());
        let (r, vault) = resolver(settings.clone());
        let u = who(Tier::Starter);
        add_openai_key(&vault, &u).await;

        let res = r.resolve(&u, "openai/gpt-4o").await.unwrap();
        assert_eq!(res.primary.provider, ProviderId::Openai);
        assert_eq!(res.primary.model, "gpt-4o");
        assert_eq!(res.primary.credential, CredentialKind::User);
        let key = res.primary.api_key.unwrap();
        assert_eq!(key.secret().expose_secret(), USER_KEY);
        assert!(res.fallback.is_none(), "user_only is the default policy");

        settings
            .put_settings(
                u.user_id,
                &UserSettings {
                    fallback_policy: FallbackPolicy::UserThenSystem,
                },
            )
            .await
            .unwrap();
        r.forget_settings(u.user_id);
        let res = r.resolve(&u, "openai/gpt-4o").await.unwrap();
        let fallback = res.fallback.unwrap();
        assert_eq!(fallback.credential, CredentialKind::System);
        assert_eq!(fallback.provider, ProviderId::Openrouter);
    }

    #[tokio::test]
    async fn without_a_user_key_the_system_default_serves() {
        let (r, _) = resolver(Arc::new(MemSettings::new()));
        let res = r.resolve(&who(Tier::Free), "gpt-4o").await.unwrap();
        assert_eq!(res.primary.credential, CredentialKind::System);
        assert_eq!(res.primary.provider, ProviderId::Openrouter);
        assert!(res.fallback.is_none());
    }

    #[test]
    fn the_badge_says_whose_key_in_one_wording() {
        let own = |label: Option<&str>, preview: &str| RouteSummary {
            provider: ProviderId::Openai,
            model: "gpt-4o".into(),
            credential: CredentialKind::User,
            key_label: label.map(str::to_string),
            key_preview: Some(KeyPreview::from_stored(preview.into())),
            fallback: false,
        };
        assert_eq!(
            own(Some("work"), "sk-p...1234").badge(),
            "Using your OpenAI key (work \u{2026}1234)"
        );
        assert_eq!(
            own(None, "sk-p...1234").badge(),
            "Using your OpenAI key (\u{2026}1234)"
        );
        assert_eq!(
            own(Some("work"), "****").badge(),
            "Using your OpenAI key (work)"
        );
        assert_eq!(own(Some("  "), "****").badge(), "Using your OpenAI key");
        let platform = RouteSummary {
            credential: CredentialKind::System,
            key_label: None,
            key_preview: None,
            ..own(None, "")
        };
        assert_eq!(platform.badge(), "Using the platform's key");
    }

    #[tokio::test]
    async fn a_summary_names_the_key_without_revealing_it() {
        let settings = Arc::new(MemSettings::new());
        let (r, vault) = resolver(settings.clone());
        let u = who(Tier::Starter);
        vault
            .add(
                &u,
                AddKey {
                    provider: ProviderId::Openai,
                    key: SecretString::from(USER_KEY),
                    label: Some("work".into()),
                    endpoint: None,
                },
            )
            .await
            .unwrap();
        settings
            .put_settings(
                u.user_id,
                &UserSettings {
                    fallback_policy: FallbackPolicy::UserThenSystem,
                },
            )
            .await
            .unwrap();
        let s = r.summarize(&u, "gpt-4o").await.unwrap();
        assert_eq!(s.credential, CredentialKind::User);
        assert_eq!(s.key_label.as_deref(), Some("work"));
        assert!(s.fallback);
        assert_eq!(s.badge(), "Using your OpenAI key (work \u{2026}ghij)");
        assert!(!format!("{s:?}").contains(USER_KEY));

        // A free user is served by the platform's key whatever they stored; an unknown
        // model is the router's refusal.
        let free = who(Tier::Free);
        let s = r.summarize(&free, "gpt-4o").await.unwrap();
        assert_eq!(s.badge(), "Using the platform's key");
        assert!(!s.fallback);
        assert!(matches!(
            r.summarize(&free, "openai/").await,
            Err(CoreError::NotFound {
                code: "unknown_model",
                ..
            })
        ));
        let models = r.reachable_models(&u).await.unwrap();
        assert!(
            models
                .iter()
                .any(|m| m.id == "gpt-4o" && m.credential == CredentialKind::User)
        );
    }
}
