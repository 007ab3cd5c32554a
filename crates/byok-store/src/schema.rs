//! Table definitions per backend. Column names and order are identical; only SQL types differ.

pub mod pg {
    diesel::table! {
        users (id) {
            id -> Uuid,
            email -> Text,
            tier -> Text,
            created_at -> Timestamptz,
            auth_source -> Nullable<Text>,
            role -> Text,
            disabled_at -> Nullable<Timestamptz>,
        }
    }

    diesel::table! {
        console_sessions (id_hash) {
            id_hash -> Text,
            user_id -> Uuid,
            csrf_token -> Text,
            token_id -> Nullable<Uuid>,
            created_at -> Timestamptz,
            last_seen_at -> Timestamptz,
            expires_at -> Timestamptz,
        }
    }

    diesel::table! {
        login_links (id_hash) {
            id_hash -> Text,
            user_id -> Uuid,
            created_at -> Timestamptz,
            expires_at -> Timestamptz,
            used_at -> Nullable<Timestamptz>,
        }
    }

    diesel::table! {
        gateway_tokens (id) {
            id -> Uuid,
            user_id -> Uuid,
            name -> Text,
            prefix -> Text,
            token_hash -> Text,
            created_at -> Timestamptz,
            last_used_at -> Nullable<Timestamptz>,
            expires_at -> Nullable<Timestamptz>,
            revoked_at -> Nullable<Timestamptz>,
        }
    }

    diesel::table! {
        user_provider_keys (id) {
            id -> Uuid,
            user_id -> Text,
            provider -> Text,
            api_key_encrypted -> Text,
            key_preview -> Text,
            enabled -> Bool,
            metadata -> Jsonb,
            created_at -> Timestamptz,
            updated_at -> Timestamptz,
        }
    }

    diesel::table! {
        user_settings (user_id) {
            user_id -> Text,
            fallback_policy -> Text,
            updated_at -> Timestamptz,
        }
    }

    diesel::table! {
        usage_records (id) {
            id -> Int8,
            user_id -> Text,
            provider -> Text,
            model -> Text,
            credential -> Text,
            status -> Int4,
            input_tokens -> Int8,
            output_tokens -> Int8,
            latency_ms -> Int8,
            created_at -> Timestamptz,
            record_id -> Nullable<Uuid>,
            fallback -> Bool,
        }
    }

    diesel::table! {
        execution_servers (id) {
            id -> Uuid,
            user_id -> Text,
            name -> Text,
            server_type -> Text,
            connection_config -> Jsonb,
            workspace_path -> Nullable<Text>,
            is_default -> Bool,
            is_active -> Bool,
            last_tested_at -> Nullable<Timestamptz>,
            test_status -> Nullable<Text>,
            created_at -> Timestamptz,
            updated_at -> Timestamptz,
        }
    }

    diesel::joinable!(gateway_tokens -> users (user_id));
    diesel::joinable!(console_sessions -> users (user_id));
    diesel::joinable!(console_sessions -> gateway_tokens (token_id));
    diesel::joinable!(login_links -> users (user_id));
    diesel::table! {
        usage_daily (user_id, day, provider, credential) {
            user_id -> Text,
            day -> Date,
            provider -> Text,
            credential -> Text,
            requests -> Int8,
            errors -> Int8,
            input_tokens -> Int8,
            output_tokens -> Int8,
        }
    }
    diesel::table! {
        usage_daily_service (day, provider, credential) {
            day -> Date,
            provider -> Text,
            credential -> Text,
            requests -> Int8,
            errors -> Int8,
            fallbacks -> Int8,
            input_tokens -> Int8,
            output_tokens -> Int8,
        }
    }
    diesel::table! {
        usage_daily_users (day, user_id) {
            day -> Date,
            user_id -> Text,
            byok -> Bool,
        }
    }

    diesel::allow_tables_to_appear_in_same_query!(
        users,
        console_sessions,
        login_links,
        gateway_tokens,
        user_provider_keys,
        user_settings,
        usage_records,
        usage_daily,
        execution_servers
    );
}

pub mod sqlite {
    diesel::table! {
        users (id) {
            id -> Text,
            email -> Text,
            tier -> Text,
            created_at -> TimestamptzSqlite,
            auth_source -> Nullable<Text>,
            role -> Text,
            disabled_at -> Nullable<TimestamptzSqlite>,
        }
    }

    diesel::table! {
        console_sessions (id_hash) {
            id_hash -> Text,
            user_id -> Text,
            csrf_token -> Text,
            token_id -> Nullable<Text>,
            created_at -> TimestamptzSqlite,
            last_seen_at -> TimestamptzSqlite,
            expires_at -> TimestamptzSqlite,
        }
    }

    diesel::table! {
        login_links (id_hash) {
            id_hash -> Text,
            user_id -> Text,
            created_at -> TimestamptzSqlite,
            expires_at -> TimestamptzSqlite,
            used_at -> Nullable<TimestamptzSqlite>,
        }
    }

    diesel::table! {
        gateway_tokens (id) {
            id -> Text,
            user_id -> Text,
            name -> Text,
            prefix -> Text,
            token_hash -> Text,
            created_at -> TimestamptzSqlite,
            last_used_at -> Nullable<TimestamptzSqlite>,
            expires_at -> Nullable<TimestamptzSqlite>,
            revoked_at -> Nullable<TimestamptzSqlite>,
        }
    }

    diesel::table! {
        user_provider_keys (id) {
            id -> Text,
            user_id -> Text,
            provider -> Text,
            api_key_encrypted -> Text,
            key_preview -> Text,
            enabled -> Bool,
            metadata -> Text,
            created_at -> TimestamptzSqlite,
            updated_at -> TimestamptzSqlite,
        }
    }

    diesel::table! {
        user_settings (user_id) {
            user_id -> Text,
            fallback_policy -> Text,
            updated_at -> TimestamptzSqlite,
        }
    }

    diesel::table! {
        usage_records (id) {
            id -> BigInt,
            user_id -> Text,
            provider -> Text,
            model -> Text,
            credential -> Text,
            status -> Integer,
            input_tokens -> BigInt,
            output_tokens -> BigInt,
            latency_ms -> BigInt,
            created_at -> TimestamptzSqlite,
            record_id -> Nullable<Text>,
            fallback -> Bool,
        }
    }

    diesel::table! {
        execution_servers (id) {
            id -> Text,
            user_id -> Text,
            name -> Text,
            server_type -> Text,
            connection_config -> Text,
            workspace_path -> Nullable<Text>,
            is_default -> Bool,
            is_active -> Bool,
            last_tested_at -> Nullable<TimestamptzSqlite>,
            test_status -> Nullable<Text>,
            created_at -> TimestamptzSqlite,
            updated_at -> TimestamptzSqlite,
        }
    }

    diesel::joinable!(gateway_tokens -> users (user_id));
    diesel::joinable!(console_sessions -> users (user_id));
    diesel::joinable!(console_sessions -> gateway_tokens (token_id));
    diesel::joinable!(login_links -> users (user_id));
    diesel::table! {
        usage_daily (user_id, day, provider, credential) {
            user_id -> Text,
            day -> Date,
            provider -> Text,
            credential -> Text,
            requests -> BigInt,
            errors -> BigInt,
            input_tokens -> BigInt,
            output_tokens -> BigInt,
        }
    }
    diesel::table! {
        usage_daily_service (day, provider, credential) {
            day -> Date,
            provider -> Text,
            credential -> Text,
            requests -> BigInt,
            errors -> BigInt,
            fallbacks -> BigInt,
            input_tokens -> BigInt,
            output_tokens -> BigInt,
        }
    }
    diesel::table! {
        usage_daily_users (day, user_id) {
            day -> Date,
            user_id -> Text,
            byok -> Bool,
        }
    }

    diesel::allow_tables_to_appear_in_same_query!(
        users,
        console_sessions,
        login_links,
        gateway_tokens,
        user_provider_keys,
        user_settings,
        usage_records,
        usage_daily,
        execution_servers
    );
}
