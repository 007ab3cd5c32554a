//! Table definitions per backend. Column names and order are identical; only SQL types differ.

pub mod pg {
    diesel::table! {
        users (id) {
            id -> Uuid,
            email -> Text,
            tier -> Text,
            created_at -> Timestamptz,
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

    diesel::joinable!(gateway_tokens -> users (user_id));
    diesel::allow_tables_to_appear_in_same_query!(users, gateway_tokens, user_provider_keys);
}

pub mod sqlite {
    diesel::table! {
        users (id) {
            id -> Text,
            email -> Text,
            tier -> Text,
            created_at -> TimestamptzSqlite,
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

    diesel::joinable!(gateway_tokens -> users (user_id));
    diesel::allow_tables_to_appear_in_same_query!(users, gateway_tokens, user_provider_keys);
}
