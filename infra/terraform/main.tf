data "azurerm_client_config" "current" {}

locals {
  resource_token = substr(sha1("${var.subscription_id}-${var.environment_name}-${var.location}"), 0, 13)
  rg_name        = var.resource_group_name != "" ? var.resource_group_name : "rg-${var.environment_name}"
  tags           = { "azd-env-name" = var.environment_name }
  function_name  = "func-${local.resource_token}"
  tenant_id      = var.defender_tenant_id != "" ? var.defender_tenant_id : data.azurerm_client_config.current.tenant_id
  queues         = ["noxys-events", "noxys-events-priority", "noxys-events-poison", "noxys-events-priority-poison", "noxys-hunting"]
  roles = {
    storage_queue_data_contributor = "974c5e8b-45b9-4653-ba55-5f855dd0fb88"
    storage_table_data_contributor = "0a9a7e1f-b9d0-4cc4-a60d-0319b160aaa3"
    storage_blob_data_owner        = "b7e6dc6d-f1e8-4753-8033-0f276bb0955b"
    key_vault_secrets_user         = "4633458b-17de-408a-b874-0445c86b69e6"
    key_vault_secrets_officer      = "b86a8fe4-44ce-4948-aee5-eccb2c155cd7"
    monitoring_metrics_publisher   = "3913510d-42f4-4e42-8a64-420c390055eb"
  }
}

resource "azurerm_resource_group" "main" {
  name     = local.rg_name
  location = var.location
  tags     = local.tags
}

resource "azurerm_user_assigned_identity" "app" {
  name                = "id-${local.resource_token}"
  resource_group_name = azurerm_resource_group.main.name
  location            = var.location
  tags                = local.tags
}

resource "azurerm_log_analytics_workspace" "main" {
  name                = "log-${local.resource_token}"
  resource_group_name = azurerm_resource_group.main.name
  location            = var.location
  sku                 = "PerGB2018"
  retention_in_days   = 90
  tags                = local.tags
}

resource "azurerm_application_insights" "main" {
  name                          = "appi-${local.resource_token}"
  resource_group_name           = azurerm_resource_group.main.name
  location                      = var.location
  workspace_id                  = azurerm_log_analytics_workspace.main.id
  application_type              = "web"
  local_authentication_disabled = true
  tags                          = local.tags
}
