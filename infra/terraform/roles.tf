# The app identity's roles, each scoped to the one resource it is for (never the subscription).
locals {
  role_id = { for k, v in local.roles : k => "/subscriptions/${var.subscription_id}/providers/Microsoft.Authorization/roleDefinitions/${v}" }
}

resource "azurerm_role_assignment" "queue_data" {
  scope              = azurerm_storage_account.main.id
  role_definition_id = local.role_id.storage_queue_data_contributor
  principal_id       = azurerm_user_assigned_identity.app.principal_id
  principal_type     = "ServicePrincipal"
}

resource "azurerm_role_assignment" "table_data" {
  scope              = azurerm_storage_account.main.id
  role_definition_id = local.role_id.storage_table_data_contributor
  principal_id       = azurerm_user_assigned_identity.app.principal_id
  principal_type     = "ServicePrincipal"
}

resource "azurerm_role_assignment" "blob_data" {
  scope              = azurerm_storage_account.main.id
  role_definition_id = local.role_id.storage_blob_data_owner
  principal_id       = azurerm_user_assigned_identity.app.principal_id
  principal_type     = "ServicePrincipal"
}

resource "azurerm_role_assignment" "secrets_user" {
  scope              = azurerm_key_vault.main.id
  role_definition_id = local.role_id.key_vault_secrets_user
  principal_id       = azurerm_user_assigned_identity.app.principal_id
  principal_type     = "ServicePrincipal"
}

resource "azurerm_role_assignment" "telemetry" {
  scope              = azurerm_application_insights.main.id
  role_definition_id = local.role_id.monitoring_metrics_publisher
  principal_id       = azurerm_user_assigned_identity.app.principal_id
  principal_type     = "ServicePrincipal"
}
