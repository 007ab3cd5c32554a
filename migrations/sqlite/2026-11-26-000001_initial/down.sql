DROP TABLE user_provider_keys;
DROP TABLE gateway_tokens;
DROP TABLE users;
