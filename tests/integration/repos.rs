//! The repository suite, run on a fresh SQLite file and a fresh PostgreSQL database.

use std::sync::Arc;

use byok_core::ports::{
    KeyRepository, NewLoginLink, NewServer, NewSession, SecretCipher, ServerChanges,
    ServerRepository, SessionRepository, SettingsRepository, StatsRepository, TokenRepository,
    UsageFigures, UsageRepository, UserRepository,
};
use byok_core::services::rotate_all;
use byok_core::*;
use byok_crypto::FernetKeyRing;
use byok_tests::db::{Kind, TestDb};
use chrono::Utc;
use secrecy::{ExposeSecret, SecretString};

byok_tests::both_backends!(
    migrations_are_idempotent,
    users_create_find_and_conflict,
    tokens_lifecycle,
    keys_upsert_replaces_and_reenables,
    keys_are_per_user,
    concurrent_upserts_leave_one_whole_row,
    record_test_only_touches_the_tested_key,
    legacy_rows_are_tolerated,
    rotation_reencrypts_everything_and_reports_failures,
    settings_default_and_replace,
    usage_batches_and_summary,
    usage_daily_totals_by_utc_day_provider_and_credential,
    servers_crud_and_name_uniqueness,
    concurrent_defaults_leave_exactly_one,
    server_pages_and_sealed_config_swap,
    external_users_keep_to_their_issuer,
    unknown_origin_rows_are_claimed_by_verified_email_or_placeholder,
    concurrent_first_sights_leave_one_row,
    concurrent_claims_of_an_unknown_origin_row_all_succeed,
    rehome_issuer_moves_only_that_issuer,
    console_sessions_and_sign_in_links,
    roles_disabled_accounts_and_user_pages,
    service_figures_adoption_and_usage_window,
);

fn new_key(user: UserId, provider: ProviderId, ciphertext: &str) -> NewStoredKey {
    NewStoredKey {
        user_id: user,
        provider,
        ciphertext: ciphertext.to_string(),
        key_preview: KeyPreview::of(ciphertext),
        metadata: KeyMetadata {
            label: Some(format!("label-{ciphertext}")),
            added_date: Some(Utc::now()),
            ..Default::default()
        },
    }
}

async fn migrations_are_idempotent(kind: Kind) {
    let t = TestDb::new(kind).await;
    let db = t.open().await;
    assert_eq!(db.migrate().await.unwrap(), 0);
    db.ping().await.unwrap();
}

async fn users_create_find_and_conflict(kind: Kind) {
    let t = TestDb::new(kind).await;
    let db = t.open().await;
    assert_eq!(UserRepository::count(&db).await.unwrap(), 0);
    let u = UserRepository::create(&db, "a@example.com", Tier::Starter)
        .await
        .unwrap();
    assert_eq!(UserRepository::get(&db, u.id).await.unwrap().unwrap(), u);
    assert_eq!(
        db.find_by_email("a@example.com").await.unwrap().unwrap().id,
        u.id
    );
    assert!(db.find_by_email("b@example.com").await.unwrap().is_none());
    let dup = UserRepository::create(&db, "a@example.com", Tier::Free)
        .await
        .unwrap_err();
    assert!(matches!(dup, StoreError::Conflict(_)), "{dup:?}");
    assert!(db.set_tier(u.id, Tier::Enterprise).await.unwrap());
    assert_eq!(
        UserRepository::get(&db, u.id).await.unwrap().unwrap().tier,
        Tier::Enterprise
    );
    assert!(!db.set_tier(UserId::new_random(), Tier::Free).await.unwrap());
    assert_eq!(UserRepository::count(&db).await.unwrap(), 1);
}

async fn tokens_lifecycle(kind: Kind) {
    let t = TestDb::new(kind).await;
    let db = t.open().await;
    let u = UserRepository::create(&db, "t@example.com", Tier::Free)
        .await
        .unwrap();
    let id = uuid::Uuid::new_v4();
    let created = TokenRepository::create(
        &db,
        NewGatewayToken {
            id,
            user_id: u.id,
            name: "laptop".into(),
            prefix: "byok_abcdefgh".into(),
            hash: "h1".into(),
            expires_at: None,
        },
    )
    .await
    .unwrap();
    let dup = TokenRepository::create(
        &db,
        NewGatewayToken {
            id: uuid::Uuid::new_v4(),
            user_id: u.id,
            name: "dup".into(),
            prefix: "byok_x".into(),
            hash: "h1".into(),
            expires_at: None,
        },
    )
    .await
    .unwrap_err();
    assert!(matches!(dup, StoreError::Conflict(_)));
    let (found, owner) = db.find_by_hash("h1").await.unwrap().unwrap();
    assert_eq!(found, created);
    assert_eq!(owner.id, u.id);
    assert!(db.find_by_hash("nope").await.unwrap().is_none());
    db.touch(id, Utc::now()).await.unwrap();
    let listed = TokenRepository::list(&db, u.id).await.unwrap();
    assert_eq!(listed.len(), 1);
    assert!(listed[0].last_used_at.is_some());
    let stranger = UserId::new_random();
    assert!(!db.revoke(stranger, id).await.unwrap());
    assert!(db.revoke(u.id, id).await.unwrap());
    assert!(
        !db.revoke(u.id, id).await.unwrap(),
        "second revoke is a no-op"
    );
    let (found, _) = db.find_by_hash("h1").await.unwrap().unwrap();
    assert!(!found.is_active(Utc::now()));
}

async fn keys_upsert_replaces_and_reenables(kind: Kind) {
    let t = TestDb::new(kind).await;
    let db = t.open().await;
    let u = UserId::new_random();
    db.upsert(new_key(u, ProviderId::Openai, "cipher-one"))
        .await
        .unwrap();
    let first = KeyRepository::get(&db, u, ProviderId::Openai)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(first.ciphertext, "cipher-one");
    assert!(first.enabled);
    assert_eq!(first.metadata.label.as_deref(), Some("label-cipher-one"));
    db.upsert(new_key(u, ProviderId::Openai, "cipher-two"))
        .await
        .unwrap();
    let all = KeyRepository::list(&db, u).await.unwrap();
    assert_eq!(all.len(), 1);
    assert_eq!(all[0].id, first.id, "replaced in place");
    assert_eq!(all[0].ciphertext, "cipher-two");
    assert_eq!(all[0].key_preview, KeyPreview::of("cipher-two"));
    db.upsert(new_key(u, ProviderId::Anthropic, "cipher-a"))
        .await
        .unwrap();
    let all = KeyRepository::list(&db, u).await.unwrap();
    assert_eq!(
        all.iter().map(|k| k.provider).collect::<Vec<_>>(),
        vec![ProviderId::Anthropic, ProviderId::Openai],
        "ordered by provider id"
    );
    assert!(
        KeyRepository::delete(&db, u, ProviderId::Openai)
            .await
            .unwrap()
    );
    assert!(
        !KeyRepository::delete(&db, u, ProviderId::Openai)
            .await
            .unwrap()
    );
    assert!(
        KeyRepository::get(&db, u, ProviderId::Openai)
            .await
            .unwrap()
            .is_none()
    );
}

async fn keys_are_per_user(kind: Kind) {
    let t = TestDb::new(kind).await;
    let db = t.open().await;
    let (a, b) = (UserId::new_random(), UserId::new_random());
    db.upsert(new_key(a, ProviderId::Groq, "cipher-a"))
        .await
        .unwrap();
    assert!(KeyRepository::list(&db, b).await.unwrap().is_empty());
    assert!(
        KeyRepository::get(&db, b, ProviderId::Groq)
            .await
            .unwrap()
            .is_none()
    );
    assert!(
        !KeyRepository::delete(&db, b, ProviderId::Groq)
            .await
            .unwrap()
    );
    assert_eq!(KeyRepository::list(&db, a).await.unwrap().len(), 1);
}

async fn concurrent_upserts_leave_one_whole_row(kind: Kind) {
    let t = TestDb::new(kind).await;
    let db = Arc::new(t.open().await);
    let u = UserId::new_random();
    let writers = 32;
    let mut tasks = Vec::new();
    for i in 0..writers {
        let db = db.clone();
        tasks.push(tokio::spawn(async move {
            db.upsert(new_key(u, ProviderId::Openai, &format!("cipher-{i:03}")))
                .await
        }));
    }
    for t in tasks {
        t.await.unwrap().unwrap();
    }
    let rows = KeyRepository::list(db.as_ref(), u).await.unwrap();
    assert_eq!(rows.len(), 1, "exactly one row per user and provider");
    let row = &rows[0];
    assert!(row.ciphertext.starts_with("cipher-"));
    assert_eq!(
        row.key_preview,
        KeyPreview::of(&row.ciphertext),
        "preview matches ciphertext"
    );
    assert_eq!(
        row.metadata.label.as_deref(),
        Some(format!("label-{}", row.ciphertext).as_str()),
        "metadata from the same write"
    );
}

async fn record_test_only_touches_the_tested_key(kind: Kind) {
    let t = TestDb::new(kind).await;
    let db = t.open().await;
    let u = UserId::new_random();
    db.upsert(new_key(u, ProviderId::Openai, "cipher-one"))
        .await
        .unwrap();
    let at = Utc::now();
    assert!(
        db.record_test(u, ProviderId::Openai, "cipher-one", at, TestStatus::Valid)
            .await
            .unwrap()
    );
    let k = KeyRepository::get(&db, u, ProviderId::Openai)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(k.metadata.test_status, Some(TestStatus::Valid));
    assert_eq!(
        k.metadata.label.as_deref(),
        Some("label-cipher-one"),
        "label kept"
    );
    assert!(k.metadata.added_date.is_some(), "added_date kept");
    assert_eq!(
        k.metadata.last_tested.map(|t| t.timestamp()),
        Some(at.timestamp())
    );
    // The key was replaced meanwhile: the old result must not land on the new key.
    db.upsert(new_key(u, ProviderId::Openai, "cipher-two"))
        .await
        .unwrap();
    assert!(
        !db.record_test(u, ProviderId::Openai, "cipher-one", at, TestStatus::Invalid)
            .await
            .unwrap()
    );
    let k = KeyRepository::get(&db, u, ProviderId::Openai)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(k.metadata.test_status, None);
}

async fn legacy_rows_are_tolerated(kind: Kind) {
    use diesel::sql_types::Text;
    use diesel_async::{AsyncConnection, RunQueryDsl};
    let t = TestDb::new(kind).await;
    let db = t.open().await;
    let u = UserId::new_random();
    let meta = r#"{"name":"old","added_date":"2024-05-01T10:00:00.123456","test_status":"valid","extra":1}"#;
    let insert = |provider: &'static str, id: uuid::Uuid| {
        let now = "2024-05-01T10:00:00+00:00";
        match kind {
            Kind::Postgres => format!(
                "INSERT INTO user_provider_keys (id, user_id, provider, api_key_encrypted, \
                 enabled, metadata, created_at, updated_at) VALUES ('{id}', $1, '{provider}', \
                 'tok', true, $2::jsonb, '{now}', '{now}')"
            ),
            Kind::Sqlite => format!(
                "INSERT INTO user_provider_keys (id, user_id, provider, api_key_encrypted, \
                 enabled, metadata, created_at, updated_at) VALUES ('{id}', ?, '{provider}', \
                 'tok', 1, ?, '{now}', '{now}')"
            ),
        }
    };
    for (p, id) in [
        ("openai", uuid::Uuid::new_v4()),
        ("azure", uuid::Uuid::new_v4()),
    ] {
        let sql = insert(p, id);
        match kind {
            Kind::Postgres => {
                let mut c = diesel_async::AsyncPgConnection::establish(&t.url)
                    .await
                    .unwrap();
                diesel::sql_query(sql)
                    .bind::<Text, _>(u.to_string())
                    .bind::<Text, _>(meta)
                    .execute(&mut c)
                    .await
                    .unwrap();
            }
            Kind::Sqlite => {
                let path = t.sqlite_path().unwrap();
                let mut c = diesel_async::sync_connection_wrapper::SyncConnectionWrapper::<
                    diesel::SqliteConnection,
                >::establish(path.to_str().unwrap())
                .await
                .unwrap();
                diesel::sql_query(sql)
                    .bind::<Text, _>(u.to_string())
                    .bind::<Text, _>(meta)
                    .execute(&mut c)
                    .await
                    .unwrap();
            }
        }
    }
    let rows = KeyRepository::list(&db, u).await.unwrap();
    assert_eq!(
        rows.len(),
        1,
        "the unknown provider row is skipped, not fatal"
    );
    let k = &rows[0];
    assert_eq!(
        k.key_preview.as_str(),
        "****",
        "default preview for legacy rows"
    );
    assert_eq!(k.metadata.label.as_deref(), Some("old"));
    assert!(
        k.metadata.added_date.is_some(),
        "naive legacy timestamp read as UTC"
    );
    assert_eq!(k.metadata.test_status, Some(TestStatus::Valid));
}

async fn rotation_reencrypts_everything_and_reports_failures(kind: Kind) {
    let t = TestDb::new(kind).await;
    let db = t.open().await;
    let old = FernetKeyRing::generate_key();
    let new = FernetKeyRing::generate_key();
    let lost = FernetKeyRing::generate_key();
    let ring = |keys: &[&SecretString]| {
        FernetKeyRing::parse(&SecretString::from(
            keys.iter()
                .map(|k| k.expose_secret().to_string())
                .collect::<Vec<_>>()
                .join(","),
        ))
        .unwrap()
    };
    let before = ring(&[&old]);
    let users: Vec<UserId> = (0..7).map(|_| UserId::new_random()).collect();
    for (i, u) in users.iter().enumerate() {
        let c = before
            .encrypt(&SecretString::from(format!("sk-secret-{i}")))
            .unwrap();
        db.upsert(new_key(*u, ProviderId::Openai, &c))
            .await
            .unwrap();
    }
    let orphan = UserId::new_random();
    let c = ring(&[&lost])
        .encrypt(&SecretString::from("sk-orphan"))
        .unwrap();
    db.upsert(new_key(orphan, ProviderId::Groq, &c))
        .await
        .unwrap();

    let during = ring(&[&new, &old]);
    let report = rotate_all(&db, &during, 3).await.unwrap();
    assert_eq!(report.processed, 8);
    assert_eq!(report.rotated, 7);
    assert_eq!(report.failed, 1);
    let again = rotate_all(&db, &during, 3).await.unwrap();
    assert_eq!((again.rotated, again.current, again.failed), (0, 7, 1));

    let after = ring(&[&new]);
    for (i, u) in users.iter().enumerate() {
        let k = KeyRepository::get(&db, *u, ProviderId::Openai)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(
            after.decrypt(&k.ciphertext).unwrap().expose_secret(),
            format!("sk-secret-{i}")
        );
    }
    let k = KeyRepository::get(&db, orphan, ProviderId::Groq)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        after.decrypt(&k.ciphertext).unwrap_err(),
        CryptoError::UnknownKey
    );
}

async fn settings_default_and_replace(kind: Kind) {
    let t = TestDb::new(kind).await;
    let db = t.open().await;
    let u = UserId::new_random();
    assert_eq!(db.get_settings(u).await.unwrap(), None);
    let s = UserSettings {
        fallback_policy: FallbackPolicy::UserThenSystem,
    };
    db.put_settings(u, &s).await.unwrap();
    assert_eq!(db.get_settings(u).await.unwrap(), Some(s));
    db.put_settings(u, &UserSettings::default()).await.unwrap();
    assert_eq!(
        db.get_settings(u).await.unwrap().unwrap().fallback_policy,
        FallbackPolicy::UserOnly
    );
    assert_eq!(db.get_settings(UserId::new_random()).await.unwrap(), None);
}

async fn usage_batches_and_summary(kind: Kind) {
    let t = TestDb::new(kind).await;
    let db = t.open().await;
    let (u, other) = (UserId::new_random(), UserId::new_random());
    let rec = |user, provider, credential, status, i, o| UsageRecord {
        id: uuid::Uuid::new_v4(),
        user_id: user,
        provider,
        model: "m".into(),
        credential,
        status,
        input_tokens: i,
        output_tokens: o,
        latency_ms: 5,
        at: Utc::now(),
        fallback: false,
    };
    db.insert_usage(&[]).await.unwrap();
    let batch: Vec<UsageRecord> = (0..300)
        .map(|i| {
            if i % 3 == 0 {
                rec(u, ProviderId::Openai, CredentialKind::User, 200, 10, 1)
            } else if i % 3 == 1 {
                rec(
                    u,
                    ProviderId::Openrouter,
                    CredentialKind::System,
                    200,
                    20,
                    2,
                )
            } else {
                rec(u, ProviderId::Openai, CredentialKind::User, 429, 0, 0)
            }
        })
        .collect();
    db.insert_usage(&batch).await.unwrap();
    db.insert_usage(&[rec(
        other,
        ProviderId::Groq,
        CredentialKind::User,
        200,
        5,
        5,
    )])
    .await
    .unwrap();
    // Written again (a retried batch, a replayed spool), in part and in whole: stored once.
    db.insert_usage(&batch[..100]).await.unwrap();
    let mut again = batch.clone();
    again.push(again[0].clone());
    db.insert_usage(&again).await.unwrap();
    let s = db.usage_summary(u).await.unwrap();
    assert_eq!(s.requests, 300, "every record id is stored once");
    assert_eq!((s.byok_requests, s.system_requests), (200, 100));
    assert_eq!(s.errors, 100);
    assert_eq!(
        (s.input_tokens, s.output_tokens),
        (100 * 10 + 100 * 20, 100 + 200)
    );
    let names: Vec<&str> = s.by_provider.iter().map(|p| p.provider.as_str()).collect();
    assert_eq!(names, ["openai", "openrouter"]);
    assert_eq!(s.by_provider[0].byok_requests, 200);
    let since = chrono::NaiveDate::from_ymd_opt(2000, 1, 1).unwrap();
    let daily = db.usage_daily(u, since).await.unwrap();
    assert_eq!(
        daily.iter().map(|d| d.requests).sum::<u64>(),
        300,
        "the daily totals count every record once"
    );
    assert_eq!(daily.iter().map(|d| d.errors).sum::<u64>(), 100);
    assert_eq!(
        db.usage_summary(UserId::new_random()).await.unwrap(),
        UsageSummary::default()
    );
}

async fn usage_daily_totals_by_utc_day_provider_and_credential(kind: Kind) {
    use chrono::{NaiveDate, TimeZone};
    let t = TestDb::new(kind).await;
    let db = t.open().await;
    let (u, other) = (UserId::new_random(), UserId::new_random());
    let at = |d: u32, h: u32, m: u32, s: u32, micros: u32| {
        Utc.with_ymd_and_hms(2026, 11, d, h, m, s).unwrap()
            + chrono::Duration::microseconds(i64::from(micros))
    };
    let rec = |user, provider, credential, status, i, o, when| UsageRecord {
        id: uuid::Uuid::new_v4(),
        user_id: user,
        provider,
        model: "m".into(),
        credential,
        status,
        input_tokens: i,
        output_tokens: o,
        latency_ms: 5,
        fallback: false,
        at: when,
    };
    use CredentialKind::{System, User};
    use ProviderId::{Anthropic, Openai};
    let day = |d| NaiveDate::from_ymd_opt(2026, 11, d).unwrap();
    let batch = vec![
        // The day before: not counted from the 10th on.
        rec(u, Openai, User, 200, 1000, 1000, at(9, 23, 59, 59, 999_999)),
        // The day's first instant.
        rec(u, Openai, User, 200, 10, 1, at(10, 0, 0, 0, 0)),
        rec(u, Openai, User, 502, 0, 0, at(10, 12, 30, 0, 250_000)),
        rec(u, Openai, System, 200, 20, 2, at(10, 13, 0, 0, 0)),
        rec(u, Anthropic, User, 200, 30, 3, at(10, 23, 59, 59, 999_999)),
        // The next UTC day begins at midnight UTC.
        rec(u, Anthropic, User, 404, 5, 0, at(11, 0, 0, 0, 0)),
        // Someone else's: never counted.
        rec(other, Openai, User, 200, 99, 99, at(10, 12, 0, 0, 0)),
    ];
    db.insert_usage(&batch).await.unwrap();
    // Written again (a retried batch, a replayed spool), whole and in part, with a record given
    // twice in one batch and one new record: the totals count each record once.
    db.insert_usage(&batch).await.unwrap();
    let mut again = batch[2..].to_vec();
    let late = rec(u, Anthropic, User, 200, 7, 7, at(11, 8, 0, 0, 0));
    again.push(late.clone());
    again.push(late);
    db.insert_usage(&again).await.unwrap();
    let rows = db.usage_daily(u, day(10)).await.unwrap();
    let row = |d, p: &str, c, r, e, i, o| DailyUsage {
        day: day(d),
        provider: p.into(),
        credential: c,
        requests: r,
        errors: e,
        input_tokens: i,
        output_tokens: o,
    };
    assert_eq!(
        rows,
        vec![
            row(10, "anthropic", User, 1, 0, 30, 3),
            row(10, "openai", System, 1, 0, 20, 2),
            row(10, "openai", User, 2, 1, 10, 1),
            row(11, "anthropic", User, 2, 1, 12, 7),
        ]
    );
    assert_eq!(db.usage_daily(u, day(9)).await.unwrap().len(), 5);
    assert!(db.usage_daily(u, day(12)).await.unwrap().is_empty());
    assert!(
        db.usage_daily(UserId::new_random(), day(1))
            .await
            .unwrap()
            .is_empty()
    );
    // The totals agree with the records.
    assert_eq!(db.usage_summary(u).await.unwrap().requests, 7);
}

fn new_server(user: UserId, name: &str, default: bool) -> NewServer {
    NewServer {
        user_id: user,
        name: name.into(),
        server_type: byok_core::execution::ServerType::Ssh,
        connection_config: serde_json::json!({"host": "h", "port": 22, "username": "u",
            "auth_method": "password", "password": {"$sealed": "token"}}),
        workspace_path: Some("/work".into()),
        is_default: default,
    }
}

async fn servers_crud_and_name_uniqueness(kind: Kind) {
    let t = TestDb::new(kind).await;
    let db = t.open().await;
    let (u, other) = (UserId::new_random(), UserId::new_random());
    let a = db.create_server(new_server(u, "a", true)).await.unwrap();
    let b = db.create_server(new_server(u, "b", false)).await.unwrap();
    let dup = db
        .create_server(new_server(u, "a", false))
        .await
        .unwrap_err();
    assert!(matches!(dup, StoreError::Conflict(_)), "{dup:?}");
    db.create_server(new_server(other, "a", true))
        .await
        .unwrap();
    let list = db.list_servers(u).await.unwrap();
    assert_eq!(
        list.iter().map(|s| s.name.as_str()).collect::<Vec<_>>(),
        ["a", "b"],
        "default first"
    );
    assert_eq!(
        db.count_servers(u).await.unwrap(),
        2,
        "the refused one not counted"
    );
    assert_eq!(db.count_servers(other).await.unwrap(), 1);
    assert_eq!(db.count_servers(UserId::new_random()).await.unwrap(), 0);
    assert_eq!(db.get_server(u, a.id).await.unwrap().unwrap(), a);
    assert!(
        db.get_server(other, a.id).await.unwrap().is_none(),
        "other users see nothing"
    );
    // A new default replaces the old one in one step.
    db.create_server(new_server(u, "c", true)).await.unwrap();
    let defaults: Vec<_> = db
        .list_servers(u)
        .await
        .unwrap()
        .into_iter()
        .filter(|s| s.is_default)
        .collect();
    assert_eq!(defaults.len(), 1);
    assert_eq!(defaults[0].name, "c");
    let renamed = db
        .update_server(
            u,
            b.id,
            ServerChanges {
                name: Some("b2".into()),
                is_active: Some(false),
                workspace_path: Some(None),
                ..Default::default()
            },
        )
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (
            renamed.name.as_str(),
            renamed.is_active,
            renamed.workspace_path.clone()
        ),
        ("b2", false, None)
    );
    let clash = db
        .update_server(
            u,
            b.id,
            ServerChanges {
                name: Some("a".into()),
                ..Default::default()
            },
        )
        .await
        .unwrap_err();
    assert!(matches!(clash, StoreError::Conflict(_)));
    assert!(
        db.update_server(other, b.id, ServerChanges::default())
            .await
            .unwrap()
            .is_none()
    );
    assert!(!db.set_default(other, b.id, true).await.unwrap());
    assert!(db.delete_server(u, b.id).await.unwrap());
    assert!(!db.delete_server(u, b.id).await.unwrap());
    assert_eq!(db.count_servers(u).await.unwrap(), 2, "a and c");
}

async fn concurrent_defaults_leave_exactly_one(kind: Kind) {
    let t = TestDb::new(kind).await;
    let db = Arc::new(t.open().await);
    let u = UserId::new_random();
    let mut ids = Vec::new();
    for i in 0..8 {
        ids.push(
            db.create_server(new_server(u, &format!("s{i}"), false))
                .await
                .unwrap()
                .id,
        );
    }
    let mut tasks = Vec::new();
    for round in 0..4 {
        for id in &ids {
            let db = db.clone();
            let id = *id;
            tasks.push(tokio::spawn(async move {
                let _ = round;
                db.set_default(u, id, true).await
            }));
        }
    }
    for task in tasks {
        assert!(task.await.unwrap().unwrap(), "every request succeeds");
    }
    let defaults = db
        .list_servers(u)
        .await
        .unwrap()
        .into_iter()
        .filter(|s| s.is_default)
        .count();
    assert_eq!(defaults, 1, "exactly one default");
}

/// Keyset pages over every user's servers, and the compare-and-swap of a sealed config that
/// key rotation uses: it loses to a concurrent change, and leaves `updated_at` as it was.
async fn server_pages_and_sealed_config_swap(kind: Kind) {
    let t = TestDb::new(kind).await;
    let db = t.open().await;
    let (u1, u2) = (UserId::new_random(), UserId::new_random());
    let mut all = Vec::new();
    for (u, name) in [(u1, "a"), (u2, "b"), (u1, "c")] {
        all.push(db.create_server(new_server(u, name, false)).await.unwrap());
    }
    let first = db.server_page(None, 2).await.unwrap();
    let rest = db.server_page(first.last().map(|s| s.id), 2).await.unwrap();
    let mut seen: Vec<_> = first.iter().chain(rest.iter()).map(|s| s.id).collect();
    assert!(seen.windows(2).all(|w| w[0] < w[1]), "ordered by id");
    seen.sort();
    let mut want: Vec<_> = all.iter().map(|s| s.id).collect();
    want.sort();
    assert_eq!(seen, want, "every server once");

    let s = &all[0];
    let fresh = serde_json::json!({"host": "h", "port": 22, "username": "u",
        "auth_method": "password", "password": {"$sealed": "rotated"}});
    assert!(
        db.replace_sealed_config(s.id, s.updated_at, &fresh)
            .await
            .unwrap()
    );
    let after = db.get_server(u1, s.id).await.unwrap().unwrap();
    assert_eq!(after.connection_config, fresh);
    assert_eq!(
        after.updated_at, s.updated_at,
        "rotation is not a user change"
    );
    // A user's change in between wins: the swap with the old timestamp is refused.
    tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    db.update_server(
        u1,
        s.id,
        ServerChanges {
            name: Some("renamed".into()),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    assert!(
        !db.replace_sealed_config(s.id, s.updated_at, &fresh)
            .await
            .unwrap()
    );
    assert!(
        !db.replace_sealed_config(uuid::Uuid::new_v4(), s.updated_at, &fresh)
            .await
            .unwrap()
    );
}

const ISSUER_A: &str = "https://sso-a.example/realms/byok";
const ISSUER_B: &str = "https://sso-b.example/realms/byok";

/// Runs `sql` on the test database through a connection of its own.
async fn raw_sql(t: &TestDb, sql: &str) {
    use diesel_async::{AsyncConnection, SimpleAsyncConnection};
    match t.kind {
        Kind::Postgres => {
            let mut c = diesel_async::AsyncPgConnection::establish(&t.url)
                .await
                .unwrap();
            c.batch_execute(sql).await.unwrap();
        }
        Kind::Sqlite => {
            let path = t.sqlite_path().unwrap();
            let mut c = diesel_async::sync_connection_wrapper::SyncConnectionWrapper::<
                diesel::SqliteConnection,
            >::establish(path.to_str().unwrap())
            .await
            .unwrap();
            c.batch_execute(sql).await.unwrap();
        }
    }
}

/// A user as stored before origins were recorded (`auth_source` NULL), tier `free`.
async fn insert_unknown_origin(t: &TestDb, id: UserId, email: &str) {
    raw_sql(
        t,
        &format!(
            "INSERT INTO users (id, email, tier, created_at, auth_source) \
             VALUES ('{}', '{email}', 'free', '2024-05-01T10:00:00+00:00', NULL)",
            id.0
        ),
    )
    .await;
}

fn placeholder(id: UserId) -> String {
    format!("{}@external.invalid", id.0)
}

fn external(issuer: &str) -> UserOrigin {
    UserOrigin::External {
        issuer: issuer.into(),
    }
}

fn is_conflict(r: Result<User, StoreError>) -> bool {
    matches!(r, Err(StoreError::Conflict(_)))
}

async fn external_users_keep_to_their_issuer(kind: Kind) {
    let t = TestDb::new(kind).await;
    let db = t.open().await;
    // A local user's id presented by an issuer, with its own (verified) email or another.
    let local = UserRepository::create(&db, "admin@corp.example", Tier::Enterprise)
        .await
        .unwrap();
    for email in ["admin@corp.example", "mallory@evil.example"] {
        let r = db
            .ensure_external(local.id, ISSUER_A, email, true, Tier::Free)
            .await;
        assert!(is_conflict(r), "a local user is never claimed ({email})");
    }
    assert_eq!(
        UserRepository::get(&db, local.id).await.unwrap().unwrap(),
        local,
        "nothing changed"
    );

    // First sight: created with the verified email and the issuer as its origin.
    let id = UserId::new_random();
    let u = db
        .ensure_external(id, ISSUER_A, "Ext@Example.com", true, Tier::Starter)
        .await
        .unwrap();
    assert_eq!(u.email, "ext@example.com");
    assert_eq!(u.origin, external(ISSUER_A));
    assert_eq!(UserRepository::get(&db, id).await.unwrap().unwrap(), u);
    // Another issuer presenting the same id: refused, nothing changed.
    let r = db
        .ensure_external(id, ISSUER_B, "ext@example.com", true, Tier::Enterprise)
        .await;
    assert!(is_conflict(r), "a user of another issuer is never claimed");
    assert_eq!(UserRepository::get(&db, id).await.unwrap().unwrap(), u);
    // The same issuer again: accepted, the tier snapshot updated.
    let again = db
        .ensure_external(id, ISSUER_A, "ext@example.com", true, Tier::Professional)
        .await
        .unwrap();
    assert_eq!(again.tier, Tier::Professional);
    assert_eq!(again.origin, external(ISSUER_A));
    assert_eq!(
        UserRepository::get(&db, id).await.unwrap().unwrap().tier,
        Tier::Professional
    );

    // An email another user holds is not linked: the new user gets the placeholder.
    let twin = UserId::new_random();
    let u = db
        .ensure_external(twin, ISSUER_B, "admin@corp.example", true, Tier::Free)
        .await
        .unwrap();
    assert_eq!(u.email, placeholder(twin));
    assert_eq!(u.origin, external(ISSUER_B));
    // An unverified email is never stored where it could be looked up.
    let unverified = UserId::new_random();
    let u = db
        .ensure_external(unverified, ISSUER_A, "ceo@corp.example", false, Tier::Free)
        .await
        .unwrap();
    assert_eq!(u.email, placeholder(unverified));
    assert!(
        db.find_by_email("ceo@corp.example")
            .await
            .unwrap()
            .is_none()
    );
    assert_eq!(UserRepository::count(&db).await.unwrap(), 4);
}

async fn unknown_origin_rows_are_claimed_by_verified_email_or_placeholder(kind: Kind) {
    let t = TestDb::new(kind).await;
    let db = t.open().await;
    let (same, unverified, other, held) = (
        UserId::new_random(),
        UserId::new_random(),
        UserId::new_random(),
        UserId::new_random(),
    );
    insert_unknown_origin(&t, same, "same@example.com").await;
    insert_unknown_origin(&t, unverified, "unverified@example.com").await;
    insert_unknown_origin(&t, other, "other@example.com").await;
    insert_unknown_origin(&t, held, &placeholder(held)).await;
    for id in [same, unverified, other, held] {
        let u = UserRepository::get(&db, id).await.unwrap().unwrap();
        assert_eq!(u.origin, UserOrigin::Unknown);
    }

    // The same email, verified (case-insensitive): claimed, tier snapshot stored.
    let u = db
        .ensure_external(same, ISSUER_A, "Same@Example.com", true, Tier::Starter)
        .await
        .unwrap();
    assert_eq!(u.origin, external(ISSUER_A));
    let stored = UserRepository::get(&db, same).await.unwrap().unwrap();
    assert_eq!(stored.origin, external(ISSUER_A));
    assert_eq!(stored.tier, Tier::Starter);
    assert_eq!(stored.email, "same@example.com");
    // From now on it is an issuer A user: issuer B is refused.
    let r = db
        .ensure_external(same, ISSUER_B, "same@example.com", true, Tier::Free)
        .await;
    assert!(is_conflict(r));

    // The same email, not verified: refused, the row stays unclaimed.
    let r = db
        .ensure_external(
            unverified,
            ISSUER_A,
            "unverified@example.com",
            false,
            Tier::Enterprise,
        )
        .await;
    assert!(is_conflict(r), "an unverified email links nothing");
    // Another email, verified or not: refused.
    for verified in [true, false] {
        let r = db
            .ensure_external(other, ISSUER_A, "someone@example.com", verified, Tier::Free)
            .await;
        assert!(is_conflict(r), "another email (verified: {verified})");
    }
    for id in [unverified, other] {
        let u = UserRepository::get(&db, id).await.unwrap().unwrap();
        assert_eq!(u.origin, UserOrigin::Unknown, "unchanged");
        assert_eq!(u.tier, Tier::Free, "unchanged");
    }

    // The placeholder only ensure_external writes: claimed, whatever the token's email.
    let u = db
        .ensure_external(held, ISSUER_B, "whoever@example.com", false, Tier::Free)
        .await
        .unwrap();
    assert_eq!(u.origin, external(ISSUER_B));
    assert_eq!(
        UserRepository::get(&db, held)
            .await
            .unwrap()
            .unwrap()
            .origin,
        external(ISSUER_B)
    );
}

async fn concurrent_first_sights_leave_one_row(kind: Kind) {
    let t = TestDb::new(kind).await;
    let db = Arc::new(t.open().await);
    let id = UserId::new_random();
    let tasks: Vec<_> = (0..16)
        .map(|_| {
            let db = db.clone();
            tokio::spawn(async move {
                db.ensure_external(id, ISSUER_A, "first@example.com", true, Tier::Starter)
                    .await
            })
        })
        .collect();
    for task in tasks {
        let u = task.await.unwrap().unwrap();
        assert_eq!(u.id, id);
        assert_eq!(u.origin, external(ISSUER_A));
    }
    assert_eq!(UserRepository::count(db.as_ref()).await.unwrap(), 1);
    let u = UserRepository::get(db.as_ref(), id).await.unwrap().unwrap();
    assert_eq!(u.email, "first@example.com");
    assert_eq!(u.origin, external(ISSUER_A));
}

async fn concurrent_claims_of_an_unknown_origin_row_all_succeed(kind: Kind) {
    let t = TestDb::new(kind).await;
    let db = Arc::new(t.open().await);
    // Several rows, so that the claims race on some of them whatever the scheduling.
    let ids: Vec<UserId> = (0..4).map(|_| UserId::new_random()).collect();
    for (i, id) in ids.iter().enumerate() {
        insert_unknown_origin(&t, *id, &format!("old{i}@example.com")).await;
    }
    for (i, id) in ids.iter().copied().enumerate() {
        let tasks: Vec<_> = (0..16)
            .map(|_| {
                let db = db.clone();
                let email = format!("old{i}@example.com");
                tokio::spawn(async move {
                    db.ensure_external(id, ISSUER_A, &email, true, Tier::Starter)
                        .await
                })
            })
            .collect();
        for task in tasks {
            let r = task.await.unwrap();
            assert!(
                matches!(&r, Ok(u) if u.origin == external(ISSUER_A)),
                "every concurrent claim by the same issuer succeeds: {r:?}"
            );
        }
        let u = UserRepository::get(db.as_ref(), id).await.unwrap().unwrap();
        assert_eq!(u.origin, external(ISSUER_A));
        assert_eq!(u.tier, Tier::Starter);
    }
    assert_eq!(UserRepository::count(db.as_ref()).await.unwrap(), 4);
}

async fn rehome_issuer_moves_only_that_issuer(kind: Kind) {
    let t = TestDb::new(kind).await;
    let db = t.open().await;
    const ISSUER_C: &str = "https://sso-new.example/realms/byok";
    let (a1, a2, b, unknown) = (
        UserId::new_random(),
        UserId::new_random(),
        UserId::new_random(),
        UserId::new_random(),
    );
    for (id, issuer) in [(a1, ISSUER_A), (a2, ISSUER_A), (b, ISSUER_B)] {
        db.ensure_external(id, issuer, "", false, Tier::Starter)
            .await
            .unwrap();
    }
    let local = UserRepository::create(&db, "admin@corp.example", Tier::Enterprise)
        .await
        .unwrap();
    insert_unknown_origin(&t, unknown, "old@example.com").await;

    // Before: the new issuer's tokens are refused as another identity source.
    let r = db
        .ensure_external(a1, ISSUER_C, "", false, Tier::Starter)
        .await;
    assert!(is_conflict(r));

    assert_eq!(db.rehome_issuer(ISSUER_A, ISSUER_C).await.unwrap(), 2);
    let origin = |id| {
        let db = &db;
        async move { UserRepository::get(db, id).await.unwrap().unwrap().origin }
    };
    assert_eq!(origin(a1).await, external(ISSUER_C));
    assert_eq!(origin(a2).await, external(ISSUER_C));
    assert_eq!(origin(b).await, external(ISSUER_B), "another issuer stays");
    assert_eq!(origin(local.id).await, UserOrigin::Local, "local stays");
    assert_eq!(origin(unknown).await, UserOrigin::Unknown, "unknown stays");
    // After: the new issuer is accepted, the old one refused.
    db.ensure_external(a1, ISSUER_C, "", false, Tier::Starter)
        .await
        .unwrap();
    let r = db
        .ensure_external(a2, ISSUER_A, "", false, Tier::Starter)
        .await;
    assert!(is_conflict(r));
    // Nothing left to move; the same issuer twice moves nothing.
    assert_eq!(db.rehome_issuer(ISSUER_A, ISSUER_C).await.unwrap(), 0);
    assert_eq!(db.rehome_issuer(ISSUER_B, ISSUER_B).await.unwrap(), 0);
    // Local users are never a source nor a target; nor is an empty issuer.
    for (from, to) in [
        ("local", ISSUER_C),
        (ISSUER_C, "local"),
        ("", ISSUER_C),
        (ISSUER_C, " "),
    ] {
        let r = db.rehome_issuer(from, to).await;
        assert!(
            matches!(r, Err(StoreError::Conflict(_))),
            "{from:?} → {to:?}: {r:?}"
        );
    }
    assert_eq!(origin(local.id).await, UserOrigin::Local);
    assert_eq!(origin(a1).await, external(ISSUER_C));
}

async fn console_sessions_and_sign_in_links(kind: Kind) {
    let t = TestDb::new(kind).await;
    let db = &t.open().await;
    let user = UserRepository::create(db, "s@example.com", Tier::Starter)
        .await
        .unwrap();
    let now = Utc::now();
    let token = TokenRepository::create(
        db,
        NewGatewayToken {
            id: uuid::Uuid::new_v4(),
            user_id: user.id,
            name: "t".into(),
            prefix: "byok_aaaaaaaa".into(),
            hash: "session-token-hash".into(),
            expires_at: None,
        },
    )
    .await
    .unwrap();
    let session = |hash: &str, token_id| NewSession {
        id_hash: hash.into(),
        user_id: user.id,
        csrf_token: "csrf".into(),
        token_id,
        created_at: now,
        expires_at: now + chrono::Duration::hours(1),
    };
    db.create_session(session("h1", None)).await.unwrap();
    db.create_session(session("h2", Some(token.id)))
        .await
        .unwrap();
    assert!(matches!(
        db.create_session(session("h1", None)).await,
        Err(StoreError::Conflict(_))
    ));
    let found = db.find_session("h1").await.unwrap().unwrap();
    assert_eq!(found.user.id, user.id);
    assert_eq!(found.csrf_token, "csrf");
    assert!(found.token.is_none());
    let bound = db.find_session("h2").await.unwrap().unwrap();
    assert_eq!(bound.token.as_ref().map(|t| t.id), Some(token.id));
    assert!(db.find_session("nope").await.unwrap().is_none());
    let later = now + chrono::Duration::minutes(5);
    db.touch_session("h1", later).await.unwrap();
    let touched = db.find_session("h1").await.unwrap().unwrap();
    assert!(touched.last_seen_at > found.last_seen_at);
    // Revoked tokens are still returned (the service decides), with their revocation.
    TokenRepository::revoke(db, user.id, token.id)
        .await
        .unwrap();
    let bound = db.find_session("h2").await.unwrap().unwrap();
    assert!(bound.token.unwrap().revoked_at.is_some());
    assert!(db.delete_session("h1").await.unwrap());
    assert!(!db.delete_session("h1").await.unwrap());
    assert_eq!(db.delete_user_sessions(user.id).await.unwrap(), 1);

    // Links: single use, expiry, and concurrent redemptions.
    let link = |hash: &str, minutes: i64| NewLoginLink {
        id_hash: hash.into(),
        user_id: user.id,
        created_at: now,
        expires_at: now + chrono::Duration::minutes(minutes),
    };
    db.create_login_link(link("l1", 15)).await.unwrap();
    db.create_login_link(link("l2", -1)).await.unwrap();
    assert_eq!(db.redeem_login_link("l2", now).await.unwrap(), None);
    let tries = (0..8).map(|_| db.redeem_login_link("l1", now));
    let won: Vec<_> = futures_util::future::join_all(tries)
        .await
        .into_iter()
        .map(Result::unwrap)
        .collect();
    assert_eq!(won.iter().filter(|w| w.is_some()).count(), 1, "{won:?}");
    assert_eq!(db.redeem_login_link("l1", now).await.unwrap(), None);
    assert_eq!(db.redeem_login_link("unknown", now).await.unwrap(), None);
    db.create_session(session("h3", None)).await.unwrap();
    let purged = db
        .delete_expired(now + chrono::Duration::hours(2))
        .await
        .unwrap();
    assert_eq!(purged, 3, "one session and two links");
}

async fn roles_disabled_accounts_and_user_pages(kind: Kind) {
    let t = TestDb::new(kind).await;
    let db = &t.open().await;
    let mut ids = Vec::new();
    for email in ["c@example.com", "a@example.com", "b@example.com"] {
        ids.push(
            UserRepository::create(db, email, Tier::Free)
                .await
                .unwrap()
                .id,
        );
    }
    let a = ids[1];
    assert_eq!(
        UserRepository::get(db, a).await.unwrap().unwrap().role,
        Role::User
    );
    assert!(
        UserRepository::set_role(db, a, Role::Operator)
            .await
            .unwrap()
    );
    assert!(
        UserRepository::set_disabled(db, a, Some(Utc::now()))
            .await
            .unwrap()
    );
    let got = UserRepository::get(db, a).await.unwrap().unwrap();
    assert_eq!(got.role, Role::Operator);
    assert!(!got.is_active());
    assert!(UserRepository::set_disabled(db, a, None).await.unwrap());
    assert!(
        UserRepository::get(db, a)
            .await
            .unwrap()
            .unwrap()
            .is_active()
    );
    assert!(
        !UserRepository::set_role(db, UserId::new_random(), Role::User)
            .await
            .unwrap()
    );
    let page = UserRepository::list_users(db, 0, 2).await.unwrap();
    let emails: Vec<_> = page.iter().map(|u| u.email.as_str()).collect();
    assert_eq!(emails, ["a@example.com", "b@example.com"]);
    let rest = UserRepository::list_users(db, 2, 2).await.unwrap();
    assert_eq!(rest.len(), 1);
}

async fn service_figures_adoption_and_usage_window(kind: Kind) {
    let t = TestDb::new(kind).await;
    let db = t.open().await;
    let a = UserRepository::create(&db, "a@example.com", Tier::Starter)
        .await
        .unwrap();
    let b = UserRepository::create(&db, "b@example.com", Tier::Free)
        .await
        .unwrap();
    let c = UserRepository::create(&db, "c@example.com", Tier::Enterprise)
        .await
        .unwrap();
    db.upsert(new_key(a.id, ProviderId::Openai, "cipher-a"))
        .await
        .unwrap();
    db.upsert(new_key(c.id, ProviderId::Openai, "cipher-c1"))
        .await
        .unwrap();
    db.upsert(new_key(c.id, ProviderId::Groq, "cipher-c2"))
        .await
        .unwrap();
    let adoption = db.adoption_stats().await.unwrap();
    assert_eq!((adoption.eligible_users, adoption.users_with_keys), (2, 2));
    assert_eq!(
        adoption.keys_by_provider,
        [("groq".to_string(), 1), ("openai".to_string(), 2)]
    );

    let rec = |user: UserId, provider, credential, status, fallback, days_ago: i64| UsageRecord {
        id: uuid::Uuid::new_v4(),
        user_id: user,
        provider,
        model: "m".into(),
        credential,
        status,
        input_tokens: 10,
        output_tokens: 2,
        latency_ms: 5,
        at: Utc::now() - chrono::TimeDelta::days(days_ago),
        fallback,
    };
    db.insert_usage(&[
        rec(
            a.id,
            ProviderId::Openai,
            CredentialKind::User,
            200,
            false,
            1,
        ),
        // An own key refused, then served on the platform's key: one fallback.
        rec(
            a.id,
            ProviderId::Openai,
            CredentialKind::User,
            429,
            false,
            1,
        ),
        rec(
            a.id,
            ProviderId::Openrouter,
            CredentialKind::System,
            200,
            true,
            1,
        ),
        rec(
            b.id,
            ProviderId::Openrouter,
            CredentialKind::System,
            200,
            false,
            2,
        ),
        // Outside the window.
        rec(c.id, ProviderId::Groq, CredentialKind::User, 200, false, 40),
    ])
    .await
    .unwrap();
    let f = db
        .usage_figures(Utc::now() - chrono::TimeDelta::days(30))
        .await
        .unwrap();
    assert_eq!((f.requests, f.own_requests, f.platform_requests), (4, 2, 2));
    assert_eq!((f.fallbacks, f.errors), (1, 1));
    assert_eq!((f.active_users, f.byok_users), (2, 1));
    let names: Vec<&str> = f.by_provider.iter().map(|p| p.provider.as_str()).collect();
    assert_eq!(names, ["openai", "openrouter"]);
    assert_eq!(
        (f.by_provider[0].own_requests, f.by_provider[0].errors),
        (2, 1)
    );
    assert_eq!(f.by_provider[1].platform_requests, 2);
    assert_eq!(f.by_provider[1].input_tokens, 20);
    let all = db
        .usage_figures(Utc::now() - chrono::TimeDelta::days(60))
        .await
        .unwrap();
    assert_eq!((all.requests, all.active_users, all.byok_users), (5, 3, 2));
    let none = db.usage_figures(Utc::now()).await.unwrap();
    assert_eq!(none, UsageFigures::default());
}
