# Key Vault (RBAC, soft delete, purge protection) holding the two secrets the app reads.
resource "azurerm_key_vault" "main" {
  #checkov:skip=CKV_AZURE_109:The Flex Consumption app has no fixed outbound IP or VNet here; access is RBAC-only with the app's identity.
  #checkov:skip=CKV_AZURE_189:Same reason: the public endpoint stays on, RBAC decides.
  #checkov:skip=CKV2_AZURE_32:No private endpoint without VNet integration.
  name                          = "kv-${local.resource_token}"
  resource_group_name           = azurerm_resource_group.main.name
  location                      = var.location
  tenant_id                     = data.azurerm_client_config.current.tenant_id
  sku_name                      = "standard"
  enable_rbac_authorization     = true
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

resource "azurerm_key_vault_secret" "defender_client_secret" {
  name            = "defender-client-secret"
  value           = var.defender_client_secret
  key_vault_id    = azurerm_key_vault.main.id
  content_type    = "Entra ID client secret of the Defender app registration"
  expiration_date = var.defender_client_secret_expiry
  depends_on      = [azurerm_role_assignment.deployer_secrets_officer]
}

resource "azurerm_key_vault_secret" "noxys_signing_secret" {
  name            = "noxys-signing-secret"
  value           = var.noxys_signing_secret
  key_vault_id    = azurerm_key_vault.main.id
  content_type    = "Noxys webhook signing secret(s), whsec_..., space-separated"
  expiration_date = var.noxys_signing_secret_expiry
  depends_on      = [azurerm_role_assignment.deployer_secrets_officer]
}
