# Key Vault (RBAC, soft delete, purge protection) holding the two secrets the app reads.

# Purge protection keeps a deleted vault's name for 90 days: a new suffix for every lifecycle
# (destroy removes it, the next apply draws another) lets `destroy` then `apply` work.
resource "random_string" "key_vault_suffix" {
  length  = 6
  special = false
  upper   = false
}

resource "azurerm_key_vault" "main" {
  #checkov:skip=CKV_AZURE_109:The Flex Consumption app has no fixed outbound IP or VNet here; access is RBAC-only with the app's identity.
  #checkov:skip=CKV_AZURE_189:Same reason: the public endpoint stays on, RBAC decides.
  #checkov:skip=CKV2_AZURE_32:No private endpoint without VNet integration.
  name                          = "kv-${local.resource_token}${random_string.key_vault_suffix.result}"
  resource_group_name           = azurerm_resource_group.main.name
  location                      = var.location
  tenant_id                     = data.azurerm_client_config.current.tenant_id
  sku_name                      = "standard"
  rbac_authorization_enabled    = true
  soft_delete_retention_days    = 90
  purge_protection_enabled      = true
  public_network_access_enabled = true
  tags                          = local.tags

  network_acls {
    default_action = "Allow"
    bypass         = "AzureServices"
  }
}

# Terraform writes the secrets through the data plane: the deployer needs this role first.
resource "azurerm_role_assignment" "deployer_secrets_officer" {
  scope              = azurerm_key_vault.main.id
  role_definition_id = "/subscriptions/${var.subscription_id}/providers/Microsoft.Authorization/roleDefinitions/${local.roles.key_vault_secrets_officer}"
  principal_id       = data.azurerm_client_config.current.object_id
}

# On an RBAC vault, Owner has no data-plane access: the operators who rotate secrets
# (`az keyvault secret set`, docs/deploy.md) get the role too, not only whoever ran apply.
resource "azurerm_role_assignment" "operator_secrets_officer" {
  for_each           = toset(var.operator_object_ids)
  scope              = azurerm_key_vault.main.id
  role_definition_id = local.role_id.key_vault_secrets_officer
  principal_id       = each.value
}

# A new role assignment takes a while to reach the Key Vault data plane: writing the secrets at
# once often answers 403 on a first apply.
resource "time_sleep" "secrets_officer_propagation" {
  create_duration = "90s"
  depends_on      = [azurerm_role_assignment.deployer_secrets_officer]
}

# Written once. A secret rotated with `az keyvault secret set` (docs/deploy.md) must not be rolled
# back by the next apply, nor a retired signing secret come back as an enabled version: later
# changes of the variables are ignored. To write a new value from Terraform on purpose:
# terraform apply -replace=azurerm_key_vault_secret.defender_client_secret -var defender_client_secret=...
resource "azurerm_key_vault_secret" "defender_client_secret" {
  name            = "defender-client-secret"
  value           = var.defender_client_secret
  key_vault_id    = azurerm_key_vault.main.id
  content_type    = "Entra ID client secret of the Defender app registration"
  expiration_date = var.defender_client_secret_expiry
  depends_on      = [time_sleep.secrets_officer_propagation]

  lifecycle {
    ignore_changes = [value, expiration_date]
  }
}

resource "azurerm_key_vault_secret" "noxys_signing_secret" {
  name            = "noxys-signing-secret"
  value           = var.noxys_signing_secret
  key_vault_id    = azurerm_key_vault.main.id
  content_type    = "Noxys webhook signing secret(s), whsec_..., space-separated"
  expiration_date = var.noxys_signing_secret_expiry
  depends_on      = [time_sleep.secrets_officer_propagation]

  lifecycle {
    ignore_changes = [value, expiration_date]
  }
}

# The bearer token Noxys sends; the app setting is a Key Vault reference to it. Written once, like
# the others: rotate it in the vault (docs/deploy.md).
resource "azurerm_key_vault_secret" "noxys_bearer_token" {
  count           = var.require_bearer_token ? 1 : 0
  name            = "noxys-bearer-token"
  value           = var.noxys_bearer_token
  key_vault_id    = azurerm_key_vault.main.id
  content_type    = "Bearer token Noxys sends with each webhook call"
  expiration_date = var.noxys_signing_secret_expiry
  depends_on      = [time_sleep.secrets_officer_propagation]

  lifecycle {
    ignore_changes = [value, expiration_date]
    precondition {
      condition     = var.noxys_bearer_token != ""
      error_message = "require_bearer_token = true needs noxys_bearer_token (the value Noxys sends)."
    }
  }
}
