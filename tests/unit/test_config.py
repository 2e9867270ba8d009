"""Settings are validated once and an error names the setting and what is expected."""

from __future__ import annotations

import pytest

from shared.config import DEFAULT_FORWARD_EVENT_TYPES, ConfigError, load_settings


def test_defaults() -> None:
    s = load_settings({})
    assert s.forward_event_types == list(DEFAULT_FORWARD_EVENT_TYPES)
    assert s.events_queue_name == "noxys-events"
    assert s.defender_scope == "https://api.securitycenter.microsoft.com/.default"
    assert not s.signing_configured


def test_lists_are_split() -> None:
    s = load_settings(
        {
            "NOXYS_SIGNING_SECRET": " whsec_YWJj  whsec_ZGVm ",
            "FORWARD_EVENT_TYPES": "interaction.high_risk, interaction.created",
        }
    )
    assert s.noxys_signing_secrets == ["whsec_YWJj", "whsec_ZGVm"]
    assert s.forward_event_types == ["interaction.high_risk", "interaction.created"]


@pytest.mark.parametrize(
    ("env", "setting", "words"),
    [
        ({"FORWARD_EVENT_TYPES": "interaction.deleted"}, "FORWARD_EVENT_TYPES", "unknown event type"),
        ({"NOXYS_SIGNING_SECRET": "plain-secret"}, "NOXYS_SIGNING_SECRET", "whsec_"),
        ({"NOXYS_SIGNING_SECRET": "whsec_not base64!"}, "NOXYS_SIGNING_SECRET", "whsec_"),
        ({"DEFENDER_API_URL": "http://api"}, "DEFENDER_API_URL", "https://"),
        ({"HEALTH_SCHEDULE": "0 * * * *"}, "HEALTH_SCHEDULE", "six-field"),
        ({"ANCHOR_WINDOW_MINUTES": "0"}, "ANCHOR_WINDOW_MINUTES", "greater than or equal"),
    ],
)
def test_bad_setting_is_named(env: dict[str, str], setting: str, words: str) -> None:
    with pytest.raises(ConfigError) as err:
        load_settings(env)
    assert err.value.setting == setting and words in str(err.value)


def test_error_never_echoes_a_secret_value() -> None:
    with pytest.raises(ConfigError) as err:
        load_settings({"NOXYS_SIGNING_SECRET": "hunter2-very-secret"})
    assert "hunter2" not in str(err.value)


def test_require_names_the_missing_setting() -> None:
    with pytest.raises(ConfigError, match="DEFENDER_CLIENT_SECRET"):
        load_settings({"DEFENDER_TENANT_ID": "t", "DEFENDER_CLIENT_ID": "c"}).require(
            "defender_tenant_id", "defender_client_id", "defender_client_secret"
        )


@pytest.mark.parametrize(
    ("cloud", "api", "authority", "scope"),
    [
        (
            "global",
            "https://api.securitycenter.microsoft.com",
            "https://login.microsoftonline.com",
            "https://api.securitycenter.microsoft.com/.default",
        ),
        (
            "eu",
            "https://eu.api.security.microsoft.com",
            "https://login.microsoftonline.com",
            "https://api.securitycenter.microsoft.com/.default",
        ),
        (
            "gcc",
            "https://api-gcc.securitycenter.microsoft.us",
            "https://login.microsoftonline.com",
            "https://api-gcc.securitycenter.microsoft.us/.default",
        ),
        (
            "GCC-High",
            "https://api-gov.securitycenter.microsoft.us",
            "https://login.microsoftonline.us",
            "https://api-gov.securitycenter.microsoft.us/.default",
        ),
    ],
)
def test_cloud_sets_url_authority_and_scope_together(cloud: str, api: str, authority: str, scope: str) -> None:
    s = load_settings({"DEFENDER_CLOUD": cloud})
    assert (s.defender_api_url, s.defender_authority_host, s.defender_scope) == (api, authority, scope)


def test_explicit_settings_override_the_cloud() -> None:
    s = load_settings(
        {"DEFENDER_CLOUD": "gcc-high", "DEFENDER_SCOPE": "https://api.securitycenter.microsoft.us/.default"}
    )
    assert s.defender_scope == "https://api.securitycenter.microsoft.us/.default"
    assert s.defender_api_url == "https://api-gov.securitycenter.microsoft.us"
    assert s.graph_api_url == "https://graph.microsoft.us"


def test_unknown_cloud_is_named() -> None:
    with pytest.raises(ConfigError) as err:
        load_settings({"DEFENDER_CLOUD": "mars"})
    assert err.value.setting == "DEFENDER_CLOUD" and "gcc-high" in str(err.value)
