"""Infrastructure validated with what this machine has: no Bicep compiler, no azurerm provider.

Every .bicep parses (pycep), every .tf parses (python-hcl2) and is `terraform fmt` clean,
checkov finds nothing it has not been told why, and Bicep and Terraform declare the same app
settings, role assignments and resource kinds — and provide every setting the code reads (or
docs/configuration.md documents it as optional with its default).
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from functools import cache
from pathlib import Path
from typing import Any, cast

import hcl2
import pytest
from pycep import BicepParser

from shared.config import Settings
from tests.infra import tf_fmt
from tests.support import ROOT

pytestmark = pytest.mark.infra

INFRA = ROOT / "infra"
TF = INFRA / "terraform"
BICEP_FILES = sorted(INFRA.rglob("*.bicep"))
TF_FILES = sorted(TF.glob("*.tf"))

# Terraform type → the ARM resource type it creates (azapi_resource carries its type itself)
TF_TO_ARM = {
    "azurerm_resource_group": "Microsoft.Resources/resourceGroups",
    "azurerm_user_assigned_identity": "Microsoft.ManagedIdentity/userAssignedIdentities",
    "azurerm_log_analytics_workspace": "Microsoft.OperationalInsights/workspaces",
    "azurerm_application_insights": "Microsoft.Insights/components",
    "azurerm_storage_account": "Microsoft.Storage/storageAccounts",
    "azurerm_storage_container": "Microsoft.Storage/storageAccounts/blobServices/containers",
    "azurerm_storage_queue": "Microsoft.Storage/storageAccounts/queueServices/queues",
    "azurerm_key_vault": "Microsoft.KeyVault/vaults",
    "azurerm_key_vault_secret": "Microsoft.KeyVault/vaults/secrets",
    "azurerm_service_plan": "Microsoft.Web/serverfarms",
    "azurerm_role_assignment": "Microsoft.Authorization/roleAssignments",
    "azurerm_monitor_action_group": "Microsoft.Insights/actionGroups",
    "azurerm_monitor_scheduled_query_rules_alert_v2": "Microsoft.Insights/scheduledQueryRules",
    "azurerm_monitor_data_collection_endpoint": "Microsoft.Insights/dataCollectionEndpoints",
    "azurerm_monitor_data_collection_rule": "Microsoft.Insights/dataCollectionRules",
    "azurerm_sentinel_log_analytics_workspace_onboarding": "Microsoft.SecurityInsights/onboardingStates",
    "azurerm_sentinel_alert_rule_scheduled": "Microsoft.SecurityInsights/alertRules",
    "azurerm_application_insights_workbook": "Microsoft.Insights/workbooks",
}
# Parents Bicep must declare explicitly and Terraform creates implicitly with the account.
IMPLICIT_IN_TERRAFORM = {
    "Microsoft.Storage/storageAccounts/blobServices",
    "Microsoft.Storage/storageAccounts/queueServices",
}
# What Bicep does with a deployment script, Terraform does with time_sleep (a wait).
BICEP_ONLY = {"Microsoft.Resources/deploymentScripts"}
GUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


@cache
def bicep(path: Path) -> dict[str, Any]:
    return cast(dict[str, Any], BicepParser().parse(file_path=path))


@cache
def terraform(path: Path) -> dict[str, Any]:
    with path.open() as f:
        result: dict[str, Any] = hcl2.load(f)
    return result


def _unquote(key: str) -> str:
    return key.strip('"')


@pytest.mark.parametrize("path", BICEP_FILES, ids=lambda p: str(p.relative_to(INFRA)))
def test_every_bicep_file_parses(path: Path) -> None:
    tree = bicep(path)
    assert tree["resources"] or tree.get("modules")


@pytest.mark.parametrize("path", TF_FILES, ids=lambda p: p.name)
def test_every_terraform_file_parses(path: Path) -> None:
    assert terraform(path)


def test_terraform_fmt_is_clean() -> None:
    exe = shutil.which("terraform")
    if exe is None:  # the layout rules tf_fmt can check, rather than a test that is always skipped
        found = {str(p.relative_to(TF)): tf_fmt.problems(p.read_text()) for p in TF_FILES}
        assert not any(found.values()), {k: v for k, v in found.items() if v}
        return
    out = subprocess.run(
        [exe, "fmt", "-check", "-recursive", "-list=true", str(TF)], capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0, f"not fmt-clean: {out.stdout}"


def test_checkov_finds_nothing_unexplained() -> None:
    checkov = ROOT / ".venv-infra" / "bin" / "checkov"
    assert checkov.exists(), "checkov is installed by scripts/bootstrap.sh into .venv-infra"
    out = subprocess.run(
        [str(checkov), "--skip-download", "-d", str(INFRA), "--framework", "bicep", "terraform", "-o", "json"],
        capture_output=True,
        text=True,
        timeout=600,
    )
    reports = json.loads(out.stdout)
    reports = reports if isinstance(reports, list) else [reports]
    frameworks = {r["check_type"] for r in reports}
    assert frameworks == {"bicep", "terraform"}, "checkov did not read both flavours"
    assert all(r["summary"]["parsing_errors"] == 0 for r in reports), (
        "checkov could not parse a file (and would pass it)"
    )
    failed = [(c["check_id"], c["resource"]) for r in reports for c in r["results"]["failed_checks"]]
    assert failed == []
    skipped = [c for r in reports for c in r["results"]["skipped_checks"]]
    assert all(len(c["check_result"].get("suppress_comment", "")) > 20 for c in skipped), "every suppression says why"
    assert sum(r["summary"]["passed"] for r in reports) > 30


# ------------------------------------------------------------------------------ parity
def bicep_app_settings() -> dict[str, Any]:
    settings: dict[str, Any] = bicep(INFRA / "app" / "function.bicep")["variables"]["appSettings"]["value"]
    return settings


def _tf_resources(tf_type: str) -> dict[str, Any]:
    found: dict[str, Any] = {}
    for path in TF_FILES:
        for block in terraform(path).get("resource", []):
            found.update(block.get(f'"{tf_type}"', {}))
    return found


def terraform_app_settings() -> dict[str, Any]:
    (locals_,) = terraform(TF / "function.tf")["locals"]
    return {_unquote(k): v for k, v in locals_["app_settings"].items()}


def test_both_flavours_set_the_same_app_settings() -> None:
    assert set(bicep_app_settings()) == set(terraform_app_settings())


def test_app_settings_are_identity_based_only() -> None:
    for settings in (bicep_app_settings(), terraform_app_settings()):
        assert settings["AzureWebJobsStorage__credential"].strip('"') == "managedidentity"
        assert "AzureWebJobsStorage" not in settings  # no connection string
        text = json.dumps(settings)
        assert "AccountKey" not in text and "SharedAccessSignature" not in text
        assert "Authorization=AAD" in text


def test_every_setting_the_code_reads_is_provided_or_documented_optional() -> None:
    readme = (ROOT / "docs" / "configuration.md").read_text()
    provided = set(bicep_app_settings()) & set(terraform_app_settings())
    missing = []
    for name, field in Settings.model_fields.items():
        alias = field.alias or name
        if alias in provided:
            continue
        documented = f"`{alias}`" in readme or f"`{alias.rsplit('_PER_', 1)[0]}" in readme
        if not (documented and not field.is_required()):
            missing.append(alias)
    assert missing == []


def _bicep_role_ids() -> set[str]:
    ids: set[str] = set()
    for path in BICEP_FILES:
        text = path.read_text()
        if "Microsoft.Authorization/roleAssignments" in text:
            ids |= set(GUID.findall(text))
    return ids


def _terraform_role_ids() -> set[str]:
    (locals_,) = [b for b in terraform(TF / "main.tf")["locals"] if "roles" in b]
    declared = {k: v.strip('"') for k, v in locals_["roles"].items()}
    used = set()
    for path in TF_FILES:
        for key in re.findall(r"local\.role_id\.(\w+)", path.read_text()):
            used.add(declared[key])
    return used


def test_both_flavours_assign_the_same_roles_scoped_to_resources() -> None:
    assert _bicep_role_ids() == _terraform_role_ids()
    for path in TF_FILES:
        for block in terraform(path).get("resource", []):
            for assignment in block.get('"azurerm_role_assignment"', {}).values():
                assert "subscription" not in assignment["scope"].split(".")[0]


def _bicep_types() -> set[str]:
    types = set()
    for path in BICEP_FILES:
        for res in bicep(path)["resources"].values():
            if not res.get("existing"):
                types.add(res["type"])
    return types - IMPLICIT_IN_TERRAFORM - BICEP_ONLY


def _terraform_types() -> set[str]:
    types = set()
    for path in TF_FILES:
        for block in terraform(path).get("resource", []):
            for quoted, instances in block.items():
                tf_type = _unquote(quoted)
                if tf_type.startswith(("time_", "random_")):  # local helpers, nothing in Azure
                    continue
                if tf_type in ("azapi_resource", "azapi_resource_action"):
                    types |= {v["type"].strip('"').split("@")[0] for v in instances.values()}
                    continue
                types.add(TF_TO_ARM[tf_type])
    return types


def test_both_flavours_declare_the_same_resource_kinds() -> None:
    assert _bicep_types() == _terraform_types()


def test_queues_match_the_code_defaults() -> None:
    defaults = Settings.model_fields
    names = {defaults[f].default for f in ("events_queue_name", "events_priority_queue_name", "hunting_queue_name")}
    queues = {f"{q}-poison" for q in names if q != "noxys-hunting"} | names
    storage_bicep = (INFRA / "app" / "storage.bicep").read_text()
    (tf_locals,) = [b for b in terraform(TF / "main.tf")["locals"] if "queues" in b]
    assert {q.strip('"') for q in tf_locals["queues"]} == queues
    assert all(f"'{q}'" in storage_bicep for q in queues)


def test_hunting_schema_detection_and_workbook_come_from_the_shared_files() -> None:
    hunting_bicep = (INFRA / "app" / "hunting.bicep").read_text() + (INFRA / "app" / "workspace.bicep").read_text()
    hunting_tf = (TF / "hunting.tf").read_text()
    for shared in (
        "../hunting/columns.json",
        "../kql/detection-high-risk-burst.kql",
        "../workbook/noxys-workbook.json",
    ):
        assert shared in hunting_bicep and shared in hunting_tf


def test_azd_parameters_exist_in_main_bicep() -> None:
    params = json.loads((INFRA / "main.parameters.json").read_text())["parameters"]
    declared = bicep(INFRA / "main.bicep")["parameters"]
    assert set(params) <= set(declared)
    required = {k for k, v in declared.items() if v.get("default") is None}
    assert required <= set(params)


def test_maximum_instance_count_is_within_what_flex_consumption_accepts() -> None:
    """40 to 1000 per scale group (lower only in a preview of three regions); the pacing budget in
    Table Storage, not the instance count, holds Defender's quota."""
    param = bicep(INFRA / "main.bicep")["parameters"]["maximumInstanceCount"]
    assert param["default"] == 40
    bounds = {d["type"]: d["argument"] for d in param["decorators"] if d.get("type") in ("min_value", "max_value")}
    assert bounds == {"min_value": 40, "max_value": 1000}
    (variable,) = [
        v
        for b in terraform(TF / "variables.tf")["variable"]
        for k, v in b.items()
        if _unquote(k) == "maximum_instance_count"
    ]
    assert variable["default"] == 40
    assert "var.maximum_instance_count >= 40 && var.maximum_instance_count <= 1000" in json.dumps(
        variable["validation"]
    )


# ------------------------------------------------------------------------------ what deploy-time review found
def test_terraform_declares_the_site_with_azapi_so_no_connection_string_is_injected() -> None:
    """The azurerm Flex Consumption resource writes an AzureWebJobsStorage connection string with an
    empty AccountKey beside the identity settings; the host prefers it and fails."""
    assert not any(_tf_resources(t) for t in ("azurerm_function_app_flex_consumption", "azurerm_linux_function_app"))
    sites = [
        r for r in _tf_resources("azapi_resource").values() if _unquote(r["type"]).startswith("Microsoft.Web/sites@")
    ]
    assert len(sites) == 1
    body = json.dumps(sites[0]["body"])
    assert "local.app_settings" in body and 'AzureWebJobsStorage"' not in body


def test_every_binding_setting_is_set_by_both_flavours() -> None:
    import function_app
    from tools.devhost.host import index_functions

    used = set()
    for f in index_functions(function_app.app):
        used |= set(re.findall(r"%([^%]+)%", json.dumps(f.get_trigger().get_dict_repr(), default=str)))
    assert used, "the triggers bind settings by name (%...%)"
    assert used <= set(bicep_app_settings()) and used <= set(terraform_app_settings())


def test_the_hunting_pipeline_takes_the_workspace_region() -> None:
    hunting_bicep = bicep(INFRA / "app" / "hunting.bicep")["resources"]
    for name in ("dce", "dcr"):
        location = hunting_bicep[name]["config"]["location"]["operator"]["operands"]
        assert (location["operand_1"], location["operand_2"]) == ("workspace", "location")
    for tf_type in ("azurerm_monitor_data_collection_endpoint", "azurerm_monitor_data_collection_rule"):
        (resource,) = _tf_resources(tf_type).values()
        assert resource["location"] == "${local.workspace_location}"
    (hunting_locals,) = terraform(TF / "hunting.tf")["locals"]  # the value, not a comment or a declaration
    assert "one(data.azapi_resource.sentinel_workspace[*].location)" in hunting_locals["workspace_location"]


def test_key_vault_can_be_provisioned_again_after_a_teardown() -> None:
    """Purge protection keeps a deleted vault's name for 90 days: both flavours add a suffix that
    changes with each lifecycle (azd hooks draw one; Terraform's random_string is destroyed with it)."""
    main = (INFRA / "main.bicep").read_text()  # the suffix is in the vault's name, not only declared
    assert re.search(r"module keyVault '[^']+' = \{[^}]*?\bname: '[^'\n]*\$\{keyVaultSuffix\}'", main), "name lacks it"
    hooks = (ROOT / "azure.yaml").read_text()
    assert "postdown" in hooks and "preprovision" in hooks
    (vault,) = _tf_resources("azurerm_key_vault").values()
    assert "random_string.key_vault_suffix.result" in vault["name"]
    assert vault["rbac_authorization_enabled"] is True and "enable_rbac_authorization" not in vault


def test_secrets_are_written_once_never_rolled_back() -> None:
    keyvault = (INFRA / "app" / "keyvault.bicep").read_text()  # the condition on each secret resource itself
    for resource, param in (("defenderSecret", "defenderClientSecret"), ("signingSecret", "noxysSigningSecret")):
        assert re.search(rf"^resource {resource} '[^']+' = if \(!empty\({param}\)\)", keyvault, re.M), resource
    for secret in _tf_resources("azurerm_key_vault_secret").values():
        ignored = secret["lifecycle"][0]["ignore_changes"]
        assert "value" in json.dumps(ignored)
        assert "time_sleep.secrets_officer_propagation" in json.dumps(secret["depends_on"])


def test_provider_versions_admit_only_releases_that_can_apply_this() -> None:
    (block,) = terraform(TF / "versions.tf")["terraform"]
    (providers,) = block["required_providers"]
    assert _unquote(providers["azurerm"]["version"]) == ">= 4.58, < 5.0"


def test_the_sentinel_rule_maps_the_fqdn_as_the_host_full_name() -> None:
    assert "identifier: 'FullName'" in (INFRA / "app" / "workspace.bicep").read_text()
    (rule,) = _tf_resources("azurerm_sentinel_alert_rule_scheduled").values()
    assert _unquote(rule["entity_mapping"][0]["field_mapping"][0]["identifier"]) == "FullName"
    assert "time_sleep.hunting_table_ready" in json.dumps(rule["depends_on"])


def test_azure_functions_doctor_finds_no_failure(tmp_path: Path) -> None:
    doctor = ROOT / ".venv-infra" / "bin" / "azure-functions-doctor"
    assert doctor.exists(), "azure-functions-doctor is installed by scripts/bootstrap.sh into .venv-infra"
    summary = tmp_path / "doctor.json"
    out = subprocess.run(
        [
            str(doctor),
            "doctor",
            "--path",
            str(ROOT),
            "--profile",
            "deploy",
            "--hosting-plan",
            "flex-consumption",
            "--target-python",
            "3.11",
            "--summary-json",
            str(summary),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    counts = json.loads(summary.read_text())
    assert counts["failed"] == 0, out.stdout[-3000:]
    assert counts["passed"] > 10
