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

# A new role assignment takes a while to reach the storage data plane; the site (and so the first
# publish right after apply) waits for it.
resource "time_sleep" "app_roles_propagation" {
  create_duration = "90s"
  depends_on      = [azurerm_role_assignment.queue_data, azurerm_role_assignment.table_data, azurerm_role_assignment.blob_data, azurerm_role_assignment.secrets_user]
}

# The operators: may switch the connector off and on (a row in Table Storage, `python -m shared switch`).
resource "azurerm_role_assignment" "operator_tables" {
  for_each           = toset(var.operator_object_ids)
  scope              = azurerm_storage_account.main.id
  role_definition_id = local.role_id.storage_table_data_contributor
  principal_id       = each.value
}
