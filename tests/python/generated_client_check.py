"""Drives the management API with a client generated from openapi/openapi.json, unedited.

scripts/test.sh generates the client with openapi-python-client, installs it into the venv and
runs this against the real binary (embedded SQLite):

    generated_client_check.py BASE_URL TOKEN

TOKEN is a gateway token of a user on a tier of `starter` or higher. Every call goes through the
generated functions and models, with `raise_on_unexpected_status`: a status the document does not
declare, or a body its models cannot parse, fails the check. Nothing here needs a provider or an
execution server to be reachable.
"""

from __future__ import annotations

import sys
from http import HTTPStatus
from uuid import UUID

from byok_gateway_client import AuthenticatedClient, Client
from byok_gateway_client.api.byok import (
    add_provider_key,
    delete_provider_key,
    get_gateway_settings,
    get_key_stats,
    list_provider_keys,
    list_providers,
    test_provider_key,
    update_gateway_settings,
)
from byok_gateway_client.api.execution_servers import (
    create_server,
    delete_server,
    exec_on_server,
    get_default_server,
    list_servers,
    update_server,
)
from byok_gateway_client.api.health import get_liveness, get_readiness
from byok_gateway_client.api.tokens import create_token, list_tokens, revoke_token
from byok_gateway_client.models import (
    AddKeyRequest,
    AddKeyResponse,
    CreatedToken,
    CreateServerRequest,
    CreateServerRequestConnectionConfig,
    CreateTokenRequest,
    DeletedServer,
    DeleteKeyResponse,
    ErrorBody,
    ExecBody,
    FallbackPolicy,
    Health,
    KeyInfo,
    ProviderId,
    ProviderInfo,
    RevokedToken,
    ServerInfo,
    ServerType,
    SettingsBody,
    StatsResponse,
    TestKeyResponse,
    TestStatus,
    Tier,
    TokenInfo,
    UpdateServerRequest,
)

MASK = "***masked***"


def expect(resp, status: HTTPStatus, model: type):
    """The response has `status` and its body parsed into `model`; returns the parsed body."""
    assert resp.status_code == status, (
        f"expected {int(status)}, got {int(resp.status_code)}: {resp.content[:300]!r}"
    )
    assert isinstance(resp.parsed, model), f"expected a {model.__name__}, got {resp.parsed!r}"
    return resp.parsed


def expect_error(resp, status: HTTPStatus, code: str) -> ErrorBody:
    err = expect(resp, status, ErrorBody)
    assert err.code == code, f"expected code {code}, got {err.code}: {err.detail}"
    return err


def health(base: str) -> None:
    anon = Client(base_url=base, raise_on_unexpected_status=True)
    assert expect(get_liveness.sync_detailed(client=anon), HTTPStatus.OK, Health).status == "ok"
    ready = expect(get_readiness.sync_detailed(client=anon), HTTPStatus.OK, Health)
    assert ready.status == "ready" and ready.database == "ok", ready


def provider_keys(api: AuthenticatedClient) -> None:
    providers = list_providers.sync_detailed(client=api)
    assert providers.status_code == HTTPStatus.OK
    assert all(isinstance(p, ProviderInfo) for p in providers.parsed)
    assert {p.id for p in providers.parsed} == set(ProviderId), providers.parsed
    assert not any(p.configured for p in providers.parsed)

    key = "sk-proj-generated-client-check-0123456789abcd"
    added = expect(
        add_provider_key.sync_detailed(
            client=api,
            body=AddKeyRequest(provider=ProviderId.OPENAI, key=key, label="generated client"),
        ),
        HTTPStatus.OK,
        AddKeyResponse,
    )
    assert added.provider == ProviderId.OPENAI and added.provider_name == "OpenAI", added

    listed = list_provider_keys.sync_detailed(client=api)
    assert listed.status_code == HTTPStatus.OK
    assert len(listed.parsed) == 1, listed.parsed
    k = listed.parsed[0]
    assert isinstance(k, KeyInfo)
    assert k.provider == ProviderId.OPENAI and k.label == "generated client", k
    assert k.key_preview == f"{key[:4]}...{key[-4:]}" and k.enabled, k
    assert k.test_status is None and k.last_tested is None and k.endpoint is None, k
    assert key not in listed.content.decode()

    # The probe goes to a closed local port (scripts/test.sh points every provider there): the
    # outcome is `error`, stored as the key's test status.
    tested = expect(
        test_provider_key.sync_detailed(ProviderId.OPENAI, client=api),
        HTTPStatus.OK,
        TestKeyResponse,
    )
    assert tested.provider == ProviderId.OPENAI and tested.status == TestStatus.ERROR, tested
    k = list_provider_keys.sync(client=api)[0]
    assert k.test_status == TestStatus.ERROR and k.last_tested is not None, k

    stats = expect(get_key_stats.sync_detailed(client=api), HTTPStatus.OK, StatsResponse)
    assert stats.configured_providers == 1 and stats.tested_providers == 1, stats
    assert stats.total_providers == len(ProviderId) and stats.user_tier == Tier.PROFESSIONAL

    settings = expect(get_gateway_settings.sync_detailed(client=api), HTTPStatus.OK, SettingsBody)
    assert settings.fallback_policy == FallbackPolicy.USER_ONLY, settings
    changed = expect(
        update_gateway_settings.sync_detailed(
            client=api, body=SettingsBody(fallback_policy=FallbackPolicy.USER_THEN_SYSTEM)
        ),
        HTTPStatus.OK,
        SettingsBody,
    )
    assert changed.fallback_policy == FallbackPolicy.USER_THEN_SYSTEM, changed

    deleted = expect(
        delete_provider_key.sync_detailed(ProviderId.OPENAI, client=api),
        HTTPStatus.OK,
        DeleteKeyResponse,
    )
    assert deleted.provider == ProviderId.OPENAI, deleted
    assert list_provider_keys.sync(client=api) == []
    expect_error(
        delete_provider_key.sync_detailed(ProviderId.OPENAI, client=api),
        HTTPStatus.NOT_FOUND,
        "key_not_found",
    )


def tokens(api: AuthenticatedClient, base: str) -> None:
    created = expect(
        create_token.sync_detailed(
            client=api, body=CreateTokenRequest(name="generated client", expires_in_days=1)
        ),
        HTTPStatus.CREATED,
        CreatedToken,
    )
    assert created.token.startswith("byok_") and created.token.startswith(created.prefix)
    assert isinstance(created.id, UUID) and created.expires_at is not None, created

    listed = list_tokens.sync_detailed(client=api)
    assert listed.status_code == HTTPStatus.OK
    mine = [t for t in listed.parsed if t.id == created.id]
    assert len(mine) == 1 and isinstance(mine[0], TokenInfo), listed.parsed
    assert mine[0].active and mine[0].revoked_at is None and mine[0].name == "generated client"

    # The new token works, through x-api-key as well.
    other = AuthenticatedClient(
        base_url=base,
        token=created.token,
        prefix="",
        auth_header_name="x-api-key",
        raise_on_unexpected_status=True,
    )
    assert list_tokens.sync_detailed(client=other).status_code == HTTPStatus.OK

    revoked = expect(
        revoke_token.sync_detailed(created.id, client=api), HTTPStatus.OK, RevokedToken
    )
    assert revoked.id == created.id, revoked
    after = [t for t in list_tokens.sync(client=api) if t.id == created.id]
    assert len(after) == 1 and not after[0].active and after[0].revoked_at is not None, after
    expect_error(list_tokens.sync_detailed(client=other), HTTPStatus.UNAUTHORIZED, "invalid_token")
    expect_error(
        revoke_token.sync_detailed(created.id, client=api), HTTPStatus.NOT_FOUND, "token_not_found"
    )


def servers(api: AuthenticatedClient) -> None:
    # SSH validates its config without connecting anywhere; create never connects.
    created = expect(
        create_server.sync_detailed(
            client=api,
            body=CreateServerRequest(
                name="generated-client",
                server_type=ServerType.SSH,
                connection_config=CreateServerRequestConnectionConfig.from_dict(
                    {
                        "host": "build.example.com",
                        "username": "agent",
                        "auth_method": "password",
                        "password": "not-a-real-password",
                    }
                ),
                workspace_path="/home/agent/work",
            ),
        ),
        HTTPStatus.CREATED,
        ServerInfo,
    )
    assert created.server_type == ServerType.SSH and not created.is_default, created
    assert created.is_active and created.test_status is None, created
    config = created.connection_config.to_dict()
    assert config["password"] == MASK and config["port"] == 22, config

    listed = list_servers.sync_detailed(client=api)
    assert listed.status_code == HTTPStatus.OK
    assert [s.id for s in listed.parsed] == [created.id], listed.parsed
    assert isinstance(listed.parsed[0], ServerInfo)

    default = get_default_server.sync_detailed(client=api)
    assert default.status_code == HTTPStatus.OK and default.parsed is None, default.parsed

    # The smallest bodies the document allows: one field each.
    renamed = expect(
        update_server.sync_detailed(
            created.id, client=api, body=UpdateServerRequest(name="generated-client-2")
        ),
        HTTPStatus.OK,
        ServerInfo,
    )
    assert renamed.name == "generated-client-2" and not renamed.is_default, renamed
    made_default = expect(
        update_server.sync_detailed(
            created.id, client=api, body=UpdateServerRequest(is_default=True)
        ),
        HTTPStatus.OK,
        ServerInfo,
    )
    assert made_default.is_default, made_default
    kept = made_default.connection_config.to_dict()
    assert kept["host"] == "build.example.com" and kept["password"] == MASK, kept
    assert made_default.workspace_path == "/home/agent/work", made_default

    default = expect(get_default_server.sync_detailed(client=api), HTTPStatus.OK, ServerInfo)
    assert default.id == created.id and default.is_default, default

    # A deactivated server refuses exec before anything connects: both forms of `command`
    # (a shell line, an argv array) reach the handler and are refused for the same reason.
    inactive = expect(
        update_server.sync_detailed(
            created.id, client=api, body=UpdateServerRequest(is_active=False)
        ),
        HTTPStatus.OK,
        ServerInfo,
    )
    assert not inactive.is_active, inactive
    for command in ("uname -a", ["echo", "hello"]):
        expect_error(
            exec_on_server.sync_detailed(
                created.id, client=api, body=ExecBody(command=command, timeout_secs=5)
            ),
            HTTPStatus.CONFLICT,
            "server_inactive",
        )

    deleted = expect(
        delete_server.sync_detailed(created.id, client=api), HTTPStatus.OK, DeletedServer
    )
    assert deleted.message, deleted
    expect_error(
        delete_server.sync_detailed(created.id, client=api),
        HTTPStatus.NOT_FOUND,
        "server_not_found",
    )
    assert list_servers.sync(client=api) == []
    assert get_default_server.sync(client=api) is None


def main() -> int:
    if len(sys.argv) != 3:
        print(f"usage: {sys.argv[0]} BASE_URL TOKEN", file=sys.stderr)
        return 2
    base, token = sys.argv[1], sys.argv[2]
    api = AuthenticatedClient(
        base_url=base, token=token, raise_on_unexpected_status=True, timeout=30.0
    )
    health(base)
    provider_keys(api)
    tokens(api, base)
    servers(api)
    print("generated client: every operation answered as the document declares")
    return 0


if __name__ == "__main__":
    sys.exit(main())
