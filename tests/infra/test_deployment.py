"""What a customer hits deploying, in the order they hit it: a provision that keeps what the operator
set, an operator who can rotate, a teardown that deletes only its own, a first deploy without
races, a plan that evaluates, storage endpoints from the cloud, a workbook that opens anywhere.

The templates are read with the same parsers as test_templates.py (no Bicep compiler or azurerm
provider here); the switch and the bearer token run in the real app on Azurite.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from ops.cli import main
from shared import wiring
from shared.config import load_settings
from shared.delivery.hold import SwitchState, decide
from tests.infra.test_templates import (
    INFRA,
    TF,
    _tf_resources,
    bicep,
    bicep_app_settings,
    terraform,
    terraform_app_settings,
)
from tests.support import ROOT, TEST_SECRET, Env, post, sample, signed_headers, violation
from tools.emulator.server import EmulatorServer
from tools.simulation import Arrival, Simulation

pytestmark = pytest.mark.infra

SECRETS_OFFICER = "b86a8fe4-44ce-4948-aee5-eccb2c155cd7"
TABLE_DATA_CONTRIBUTOR = "0a9a7e1f-b9d0-4cc4-a60d-0319b160aaa3"


def both_settings() -> list[dict[str, str]]:
    return [
        {k: json.dumps(v) if not isinstance(v, str) else v for k, v in flavour.items()}
        for flavour in (bicep_app_settings(), terraform_app_settings())
    ]


def config(node: dict[str, Any]) -> dict[str, Any]:
    """A Bicep resource's or module's body, a conditional one (`= if (...)`) unwrapped."""
    body: dict[str, Any] = node["config"]
    return body.get("config", body) if "condition" in body else body


def tf(tf_type: str) -> dict[str, Any]:
    return {k.strip('"'): v for k, v in _tf_resources(tf_type).items()}


def use(sim: Simulation) -> None:
    """A fresh process (a provision restarts the app): settings read again, nothing cached."""
    wiring.reset()
    wiring.use(clock=sim.clock, sender=sim.sender)


# ------------------------------------------------------------------------------ 2. settings it keeps
def test_no_provision_writes_the_switch_and_every_operator_setting_is_a_parameter() -> None:
    for settings in both_settings():
        assert "INTEGRATION_ENABLED" not in settings, "a provision would re-arm a switched-off connector"
        assert "RISK_CONFIG_FILE" in settings and "RESPONSE_RULES_FILE" in settings
    main_bicep = bicep(INFRA / "main.bicep")["parameters"]
    assert {"riskConfigFile", "requireBearerToken", "noxysBearerToken"} <= set(main_bicep)
    variables = {k.strip('"') for block in terraform(TF / "variables.tf")["variable"] for k in block}
    assert {"risk_config_file", "require_bearer_token", "noxys_bearer_token"} <= variables


def test_the_bearer_token_is_a_key_vault_reference_kept_across_provisions() -> None:
    bicep_value = (INFRA / "app" / "function.bicep").read_text()
    tf_value = terraform_app_settings()["NOXYS_BEARER_TOKEN"]
    for text in (bicep_value, tf_value):
        assert "@Microsoft.KeyVault(VaultName=" in text and "SecretName=noxys-bearer-token)" in text
    # the reference hangs on a plain flag, never on the secret's value (emptied after the first provision)
    assert "requireBearerToken ? '@Microsoft.KeyVault(" in bicep_value
    assert tf_value.startswith("${var.require_bearer_token ?")
    assert "= if (!empty(noxysBearerToken))" in (INFRA / "app" / "keyvault.bicep").read_text()
    (secret,) = [s for s in _tf_resources("azurerm_key_vault_secret").values() if "bearer" in s["name"]]
    assert "value" in json.dumps(secret["lifecycle"][0]["ignore_changes"])
    hooks = (ROOT / "scripts" / "azd-hooks.sh").read_text()
    assert 'azd env set NOXYS_BEARER_TOKEN ""' in hooks and "REQUIRE_BEARER_TOKEN" not in hooks
    params = json.loads((INFRA / "main.parameters.json").read_text())["parameters"]
    assert params["requireBearerToken"]["value"] == "${REQUIRE_BEARER_TOKEN=false}"


def test_the_switch_policy() -> None:
    assert decide(None, None) == SwitchState(on=True, seen=None)  # first run, nothing set: on
    assert decide(None, False) == SwitchState(on=False, seen=False)  # the setting is the first default
    off = SwitchState(on=False, seen=None)
    assert decide(off, None) == off  # a provision (setting absent): stays off
    assert decide(SwitchState(on=False, seen=False), None).on is False  # set off by hand, then redeployed
    assert decide(SwitchState(on=False, seen=False), True).on is True  # the operator changes it by hand
    assert decide(SwitchState(on=True, seen=False), False).on is True  # unchanged setting: the stored state wins


def test_a_second_provision_leaves_a_switched_off_connector_off(
    sim: Simulation, env: Env, emulator: EmulatorServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("INTEGRATION_ENABLED", raising=False)  # what both flavours write: nothing
    use(sim)
    assert main(["switch", "off"]) == 0  # the operator, from a workstation
    use(sim)
    sim.run([Arrival(0, [violation(1)])])
    assert emulator.state.alerts == [] and emulator.state.calls == []

    use(sim)  # provision again: every app setting replaced, the app restarted
    sim.run([Arrival(0, [violation(2)])])
    assert emulator.state.alerts == [] and emulator.state.calls == []
    assert len(list(env.table("Held").list_entities())) == 2

    assert main(["switch", "on"]) == 0
    use(sim)
    (release,) = [t for t in sim.host.timers if t.name == "release_held_events"]
    sim.host.fire_timer(release)
    sim.run([])
    assert len(emulator.state.alerts) == 2


def test_a_workstation_setting_never_rearms_the_connector(
    sim: Simulation, env: Env, emulator: EmulatorServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The CLI runs where local.settings.json says INTEGRATION_ENABLED=true (the example does):
    reading the state there must not count as the app's setting having changed."""
    monkeypatch.delenv("INTEGRATION_ENABLED", raising=False)  # the deployed app: a provision wrote none
    use(sim)
    sim.run([Arrival(0, [violation(1)])])
    assert len(emulator.state.alerts) == 1
    (Path.cwd() / "local.settings.json").write_text(json.dumps({"Values": {"INTEGRATION_ENABLED": "true"}}))
    for command in (["switch", "off"], ["status"], ["switch", "show"]):
        wiring.reset()  # each command a process of its own, reading the folder's local.settings.json
        assert main(command) == 0
    os.environ.pop("INTEGRATION_ENABLED", None)  # the app's process never had the workstation's values
    use(sim)
    sim.run([Arrival(0, [violation(2)])])
    assert len(emulator.state.alerts) == 1 and len(list(env.table("Held").list_entities())) == 1


def test_switched_off_by_the_app_setting_then_redeployed_stays_off(
    sim: Simulation, env: Env, emulator: EmulatorServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("INTEGRATION_ENABLED", "false")  # the operator, by hand in the portal
    use(sim)
    sim.run([Arrival(0, [violation(1)])])
    monkeypatch.delenv("INTEGRATION_ENABLED")  # the provision replaced the list
    use(sim)
    sim.run([Arrival(0, [violation(2)])])
    assert emulator.state.alerts == [] and len(list(env.table("Held").list_entities())) == 2


def test_an_unresolved_bearer_reference_fails_closed_a_resolved_one_is_required(
    sim: Simulation, env: Env, monkeypatch: pytest.MonkeyPatch
) -> None:
    body = sample("policy_violated")
    monkeypatch.setenv("NOXYS_BEARER_TOKEN", "@Microsoft.KeyVault(VaultName=kv-x;SecretName=noxys-bearer-token)")
    use(sim)
    refused = post(sim.host, body, signed_headers(body, msg_id="m1"))
    assert refused.status_code == 503 and "NOXYS_BEARER_TOKEN" in refused.text
    monkeypatch.setenv("NOXYS_BEARER_TOKEN", "the-token-from-the-vault")  # as the platform resolves it
    use(sim)
    assert post(sim.host, body, signed_headers(body, msg_id="m2")).status_code == 401
    ok = post(sim.host, body, signed_headers(body, msg_id="m3") | {"Authorization": "Bearer the-token-from-the-vault"})
    assert ok.status_code == 202
    assert TEST_SECRET not in refused.text


# ------------------------------------------------------------------------------ 3. the operator can rotate
def test_the_operator_gets_secrets_officer_and_the_switch_in_both_flavours() -> None:
    keyvault = bicep(INFRA / "app" / "keyvault.bicep")["resources"]["operatorSecretsOfficer"]
    assert keyvault["type"] == "Microsoft.Authorization/roleAssignments"
    assert SECRETS_OFFICER in (INFRA / "app" / "keyvault.bicep").read_text()
    assert "operatorPrincipalId" in (INFRA / "app" / "roles.bicep").read_text()
    modules = bicep(INFRA / "main.bicep")["modules"]
    for name in ("keyVault", "roles"):
        assert json.dumps(config(modules[name])["params"]["operatorPrincipalId"]) == '"principalId"'
    officer = tf("azurerm_role_assignment")["operator_secrets_officer"]
    tables = tf("azurerm_role_assignment")["operator_tables"]
    for assignment in (officer, tables):
        assert assignment["for_each"] == "${toset(var.operator_object_ids)}"
    assert "key_vault_secrets_officer" in officer["role_definition_id"]
    assert "storage_table_data_contributor" in tables["role_definition_id"]


# ------------------------------------------------------------------------------ 4. teardown
def test_azd_deploys_nothing_outside_its_own_resource_group() -> None:
    """`azd down` deletes every resource group holding a resource of the deployment."""
    for name, module in bicep(INFRA / "main.bicep")["modules"].items():
        assert config(module)["scope"] == "rg", f"module {name} reaches another resource group"
    found = re.search(r"^requiredVersions:\n  azd: \"(.+)\"$", (ROOT / "azure.yaml").read_text(), flags=re.M)
    assert found and re.fullmatch(r">= 1\.(2[5-9]|[3-9]\d)\.\d+", found.group(1))


def test_terraform_destroy_leaves_the_table_in_an_external_workspace() -> None:
    assert "!local.external_workspace" in tf("azapi_resource")["hunting_table"]["count"]
    action = tf("azapi_resource_action")["hunting_table_external"]
    assert "local.external_workspace" in action["count"] and action["method"].strip('"') == "PUT"
    assert "when" not in action  # runs on apply only: destroy sends nothing


# ------------------------------------------------------------------------------ 5. first-deploy races
def test_the_rule_waits_for_the_table_and_the_site_for_its_roles() -> None:
    workspace = bicep(INFRA / "app" / "workspace.bicep")
    assert "tableReady" in config(workspace["resources"]["detection"])["dependsOn"]
    assert config(workspace["modules"]["tableReady"])["dependsOn"] == ["table"]
    main_modules = bicep(INFRA / "main.bicep")["modules"]
    assert "rolesReady" in config(main_modules["app"])["dependsOn"]
    assert config(main_modules["rolesReady"])["dependsOn"] == ["roles"]
    (site,) = [r for r in _tf_resources("azapi_resource").values() if "Microsoft.Web/sites" in r["type"]]
    assert "time_sleep.app_roles_propagation" in json.dumps(site["depends_on"])


# ------------------------------------------------------------------------------ 6. plan-time evaluation
def _locals(name: str) -> str:
    return "".join(re.findall(r"^locals \{\n.*?^\}\n", (TF / name).read_text(), flags=re.S | re.M))


def _console(tmp: Path, source: str, variables: dict[str, Any], expression: str) -> subprocess.CompletedProcess[str]:
    """``expression`` evaluated by terraform itself over ``source`` (variables and locals of this
    configuration): no provider is needed for expressions, so this runs offline."""
    module = tmp / "m"
    module.mkdir(exist_ok=True)
    (module / "main.tf").write_text(source)
    tfvars = module / "t.tfvars.json"
    tfvars.write_text(json.dumps(variables))
    exe = shutil.which("terraform")
    assert exe is not None
    return subprocess.run(
        [exe, "console", f"-var-file={tfvars}"],
        input=expression + "\n",
        cwd=module,
        capture_output=True,
        text=True,
        timeout=120,
        env={"PATH": "/usr/bin:/bin", "HOME": str(tmp), "TF_CLI_CONFIG_FILE": "/dev/null", "CHECKPOINT_DISABLE": "1"},
    )


def _hunting_locals() -> str:
    """hunting.tf's locals, the data source standing in as the list ``count`` makes of it."""
    stand_ins = (
        'variable "enable_hunting_table" { type = bool }\n'
        'variable "sentinel_workspace_id" { type = string }\n'
        "locals {\n"
        '  data_sentinel_workspace = [for i in range(var.enable_hunting_table && var.sentinel_workspace_id != ""'
        ' ? 1 : 0) : { location = "swedencentral" }]\n'
        '  main_workspace          = { id = "/own/workspace", location = "westeurope" }\n'
        "}\n"
    )
    return stand_ins + (
        _locals("hunting.tf")
        .replace("data.azapi_resource.sentinel_workspace", "local.data_sentinel_workspace")
        .replace("azurerm_log_analytics_workspace.main", "local.main_workspace")
        .replace("${path.module}/../hunting/columns.json", str(INFRA / "hunting" / "columns.json"))
    )


@pytest.mark.skipif(shutil.which("terraform") is None, reason="terraform is not installed on this machine")
@pytest.mark.parametrize(
    ("enable", "workspace", "expected"),
    [
        (
            False,
            "/subscriptions/s/resourceGroups/g/providers/Microsoft.OperationalInsights/workspaces/w",
            "tostring(null)",
        ),
        (
            True,
            "/subscriptions/s/resourceGroups/g/providers/Microsoft.OperationalInsights/workspaces/w",
            "swedencentral",
        ),
        (True, "", "westeurope"),
        (False, "", "westeurope"),
    ],
)
def test_hunting_locals_evaluate_with_the_hunting_table_off(
    tmp_path: Path, enable: bool, workspace: str, expected: str
) -> None:
    """`sentinel_workspace_id` set with `enable_hunting_table = false` indexed an empty data source."""
    variables = {"enable_hunting_table": enable, "sentinel_workspace_id": workspace}
    out = _console(tmp_path, _hunting_locals(), variables, "local.workspace_location")
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().strip('"') == expected


# ------------------------------------------------------------------------------ 10. smaller
def test_the_documented_az_deployment_passes_a_vault_suffix_and_the_operator() -> None:
    """Without keyVaultSuffix a redeploy after teardown collides with the soft-deleted vault."""
    deploy = (ROOT / "docs" / "deploy.md").read_text()
    commands = re.findall(r"^az deployment sub create.*?(?=\n\S|\n\n)", deploy, flags=re.S | re.M)
    assert commands
    for command in commands:
        assert "keyVaultSuffix=" in command and "principalId=" in command


# A resource's attribute is known only after apply: in an expression it stands in as a string.
RESOURCE_REF = re.compile(r"\b(?:data\.)?(?:azurerm|azapi)_\w+\.\w+(?:\[\d+\])?(?:\.\w+)+")
FIRST_APPLY = {
    "subscription_id": "00000000-0000-0000-0000-000000000000",
    "environment_name": "noxys-prod",
    "location": "westeurope",
    "defender_client_id": "11111111-1111-1111-1111-111111111111",
    "defender_client_secret": "s3cret",
    "defender_client_secret_expiry": "2028-11-27T00:00:00Z",
    "noxys_signing_secret": "whsec_AAAA",
    "noxys_signing_secret_expiry": "2028-11-27T00:00:00Z",
    "require_bearer_token": True,
    "noxys_bearer_token": "the-token",
}


@pytest.mark.skipif(shutil.which("terraform") is None, reason="terraform is not installed on this machine")
def test_a_second_terraform_apply_writes_the_same_settings_without_the_secrets(tmp_path: Path) -> None:
    """The app settings of two applies, evaluated by terraform with this configuration's variables
    (validations included): the second without any secret value, as after a rotation in the vault."""
    source = (TF / "variables.tf").read_text() + RESOURCE_REF.sub(
        '"<known after apply>"', _locals("main.tf") + _locals("function.tf")
    )
    later = FIRST_APPLY | {"defender_client_secret": "", "noxys_signing_secret": "", "noxys_bearer_token": ""}
    rendered = []
    for variables in (FIRST_APPLY, later):
        out = _console(tmp_path, source, variables, "jsonencode(local.app_settings)")
        assert out.returncode == 0, out.stderr
        rendered.append(json.loads(json.loads(out.stdout.strip())))
    first, second = rendered
    assert first == second
    assert "INTEGRATION_ENABLED" not in second
    assert second["NOXYS_BEARER_TOKEN"].startswith("@Microsoft.KeyVault(VaultName=")
    assert "the-token" not in json.dumps(first) and "s3cret" not in json.dumps(first)


# What a Bicep provision writes, evaluated over the parsed templates (no Bicep compiler here): the
# subset of expressions the app settings and the secrets' conditions use. pycep gives a parameter
# reference and a literal alike as a string: a name in scope is the reference.
KNOWN_AFTER = "<known after deployment>"


def _bicep_text(text: str, scope: dict[str, Any], suffix: str) -> Any:
    if text in scope:
        return scope[text]

    def part(m: re.Match[str]) -> str:
        inner = m.group(1)
        if inner == "environment().suffixes.storage":
            return suffix
        return str(scope[inner]) if inner in scope else KNOWN_AFTER

    return re.sub(r"\$\{([^}]+)\}", part, text)


def _bicep_value(node: Any, scope: dict[str, Any], suffix: str) -> Any:
    if node is None or isinstance(node, bool | int | float):
        return node
    if isinstance(node, str):
        return _bicep_text(node, scope, suffix)
    if "operator" in node:
        kind, operands = node["operator"]["type"], node["operator"]["operands"]
        if kind == "conditional":
            chosen = "true_value" if _bicep_value(operands["condition"], scope, suffix) else "false_value"
            return _bicep_value(operands[chosen], scope, suffix)
        if kind == "not":
            return not _bicep_value(operands["bool_value"], scope, suffix)
        if kind == "property_accessor":  # a module's or resource's output
            return KNOWN_AFTER
    if "function" in node and node["function"]["type"] == "empty":
        return not _bicep_value(node["function"]["parameters"]["item_to_test"], scope, suffix)
    raise NotImplementedError(json.dumps(node)[:200])


def _module_scope(main_scope: dict[str, Any], module: str, path: Path, suffix: str) -> dict[str, Any]:
    params = config(bicep(INFRA / "main.bicep")["modules"][module])["params"]
    declared = bicep(path)["parameters"]
    scope = {k: v["default"] for k, v in declared.items() if isinstance(v.get("default"), str | bool | int)}
    return scope | {k: _bicep_value(v, main_scope, suffix) for k, v in params.items()}


def bicep_provision(given: dict[str, Any], suffix: str = "core.windows.net") -> tuple[dict[str, Any], set[str]]:
    """The app settings one `azd provision` writes, and which Key Vault secrets it writes."""
    declared = bicep(INFRA / "main.bicep")["parameters"]
    main_scope = {k: v["default"] for k, v in declared.items() if isinstance(v.get("default"), str | bool | int)}
    main_scope |= {name: KNOWN_AFTER for name in bicep(INFRA / "main.bicep")["variables"]} | given  # not evaluated here
    app = _module_scope(main_scope, "app", INFRA / "app" / "function.bicep", suffix)
    settings = {k: _bicep_value(v, app, suffix) for k, v in bicep_app_settings().items()}
    vault_scope = _module_scope(main_scope, "keyVault", INFRA / "app" / "keyvault.bicep", suffix)
    written = set()
    for resource in bicep(INFRA / "app" / "keyvault.bicep")["resources"].values():
        body = resource["config"]
        if resource["type"].endswith("/secrets") and _bicep_value(body["condition"], vault_scope, suffix):
            written.add(body["config"]["name"])
    return settings, written


FIRST_PROVISION = {
    "environmentName": "noxys-prod",
    "location": "westeurope",
    "defenderClientId": "11111111-1111-1111-1111-111111111111",
    "defenderClientSecret": "s3cret",
    "noxysSigningSecret": "whsec_AAAA",
    "noxysBearerToken": "the-token",
    "requireBearerToken": True,
}


def test_a_second_azd_provision_writes_the_same_settings_and_no_secret() -> None:
    """After the first provision the hooks empty the secret values (test below): the second writes
    no secret — a rotated one stays — and the same settings, the bearer reference included."""
    first, first_written = bicep_provision(FIRST_PROVISION)
    later = FIRST_PROVISION | {"defenderClientSecret": "", "noxysSigningSecret": "", "noxysBearerToken": ""}
    second, second_written = bicep_provision(later)
    assert first_written == {"defender-client-secret", "noxys-signing-secret", "noxys-bearer-token"}
    assert second_written == set()
    assert first == second
    assert "INTEGRATION_ENABLED" not in second
    assert second["NOXYS_BEARER_TOKEN"].startswith("@Microsoft.KeyVault(VaultName=")
    assert "the-token" not in json.dumps(first) and "s3cret" not in json.dumps(first)


def test_a_provision_in_azure_government_writes_its_storage_endpoints() -> None:
    settings, _ = bicep_provision(FIRST_PROVISION, suffix="core.usgovcloudapi.net")
    for service in ("blob", "queue", "table"):
        assert settings[f"AzureWebJobsStorage__{service}ServiceUri"].endswith(f".{service}.core.usgovcloudapi.net")


# ------------------------------------------------------------------------------ 8. sovereign clouds
def test_storage_endpoints_come_from_the_cloud_in_both_flavours() -> None:
    services = ("blob", "queue", "table")
    bicep_settings, tf_settings = bicep_app_settings(), terraform_app_settings()
    for service in services:
        key = f"AzureWebJobsStorage__{service}ServiceUri"
        assert f".{service}.${{environment().suffixes.storage}}" in json.dumps(bicep_settings[key])
        assert tf_settings[key] == f'${{trimsuffix(azurerm_storage_account.main.primary_{service}_endpoint, "/")}}'
    for settings in (bicep_settings, tf_settings):
        assert "AzureWebJobsStorage__accountName" not in settings  # it can only mean the public cloud
    infra_text = "".join(p.read_text() for p in [*INFRA.rglob("*.bicep"), *TF.glob("*.tf")])
    assert "core.windows.net" not in infra_text


def test_the_app_uses_the_service_uris_it_is_given() -> None:
    from shared.storage import queue_service_uri, table_service_uri

    gov = load_settings(
        {
            "AzureWebJobsStorage__queueServiceUri": "https://st1.queue.core.usgovcloudapi.net/",
            "AzureWebJobsStorage__tableServiceUri": "https://st1.table.core.usgovcloudapi.net",
            "AzureWebJobsStorage__blobServiceUri": "https://st1.blob.core.usgovcloudapi.net",
        }
    )
    assert queue_service_uri(gov) == "https://st1.queue.core.usgovcloudapi.net"
    assert table_service_uri(gov) == "https://st1.table.core.usgovcloudapi.net"


# ------------------------------------------------------------------------------ 9. workbook
def test_the_workbook_opens_on_the_deployed_workspace_and_can_pick_another() -> None:
    from tools.workbook import WORKSPACE_PLACEHOLDER, build

    workbook = build()
    assert workbook["fallbackResourceIds"] == [WORKSPACE_PLACEHOLDER]
    hunting_bicep = (INFRA / "app" / "hunting.bicep").read_text()
    (tf_workbook,) = _tf_resources("azurerm_application_insights_workbook").values()
    assert f"'{WORKSPACE_PLACEHOLDER}', workspaceId)" in hunting_bicep
    assert f'"{WORKSPACE_PLACEHOLDER}", local.workspace_id)' in tf_workbook["data_json"]
    (picker,) = [i for i in workbook["items"] if i["type"] == 9]
    assert [p["name"] for p in picker["content"]["parameters"]] == ["Workspace"]
    queries = [i["content"] for i in workbook["items"] if i["type"] == 3]
    assert all(q["crossComponentResources"] == ["{Workspace}"] for q in queries)
    assert any("CombinedRiskScore" in q["query"] for q in queries)
    for q in queries:  # a Defender XDR table only behind a fuzzy union: the tile works without the connector
        if "DeviceNetworkInfo" in q["query"]:
            assert "union isfuzzy=true" in q["query"]


def test_the_sentinel_rule_uses_the_combined_score() -> None:
    query = (INFRA / "kql" / "detection-high-risk-burst.kql").read_text()
    assert "coalesce(CombinedRiskScore, RiskScore)" in query and "RiskFactors" in query


# ------------------------------------------------------------------------------ azd hooks
FAKE_AZD = """
import json, os, sys
path = os.environ["FAKE_AZD_ENV"]
values, args = json.load(open(path)), sys.argv[1:]
if args[:2] == ["env", "get-value"]:
    if args[2] not in values:
        sys.exit(1)
    print(values[args[2]])
elif args[:2] == ["env", "set"]:
    values[args[2]] = args[3]
    json.dump(values, open(path, "w"))
else:
    sys.exit(2)
"""


def _run_hook(tmp: Path, stage: str, env_values: dict[str, str]) -> dict[str, str]:
    """scripts/azd-hooks.sh run by sh with an `azd` on PATH that keeps its environment in a file,
    as azd's `env get-value` / `env set` do: what the environment holds afterwards."""
    store = tmp / "azd-env.json"
    store.write_text(json.dumps(env_values))
    fake = tmp / "bin" / "azd"
    fake.parent.mkdir(exist_ok=True)
    fake.write_text(f"#!{sys.executable}\n{FAKE_AZD}")
    fake.chmod(0o755)
    sh = shutil.which("sh")
    assert sh is not None
    out = subprocess.run(
        [sh, str(ROOT / "scripts" / "azd-hooks.sh"), stage],
        env={"PATH": f"{fake.parent}:/usr/bin:/bin", "FAKE_AZD_ENV": str(store)},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr
    result: dict[str, str] = json.loads(store.read_text())
    return result


def test_postprovision_forgets_the_secret_values_but_keeps_the_bearer_flag(tmp_path: Path) -> None:
    before = {
        "DEFENDER_CLIENT_SECRET": "s3cret",
        "NOXYS_SIGNING_SECRET": "whsec_AAAA",
        "NOXYS_BEARER_TOKEN": "the-token",
        "REQUIRE_BEARER_TOKEN": "true",
        "KEY_VAULT_SUFFIX": "a1b2c3",
    }
    after = _run_hook(tmp_path, "postprovision", before)
    assert after == before | {"DEFENDER_CLIENT_SECRET": "", "NOXYS_SIGNING_SECRET": "", "NOXYS_BEARER_TOKEN": ""}


def test_the_vault_suffix_is_drawn_once_then_anew_after_teardown(tmp_path: Path) -> None:
    first = _run_hook(tmp_path, "preprovision", {})["KEY_VAULT_SUFFIX"]
    assert re.fullmatch(r"[0-9a-f]{6}", first)
    assert _run_hook(tmp_path, "preprovision", {"KEY_VAULT_SUFFIX": first})["KEY_VAULT_SUFFIX"] == first
    assert _run_hook(tmp_path, "postdown", {"KEY_VAULT_SUFFIX": first})["KEY_VAULT_SUFFIX"] != first
