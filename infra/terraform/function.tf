# The Function App on Flex Consumption (Linux, Python 3.11), identity-based settings only.
locals {
  app_settings = {
    # host storage through the managed identity: no connection string, no key
    "AzureWebJobsStorage__accountName"          = azurerm_storage_account.main.name
    "AzureWebJobsStorage__credential"           = "managedidentity"
    "AzureWebJobsStorage__clientId"             = azurerm_user_assigned_identity.app.client_id
    "APPLICATIONINSIGHTS_CONNECTION_STRING"     = azurerm_application_insights.main.connection_string
    "APPLICATIONINSIGHTS_AUTHENTICATION_STRING" = "ClientId=${azurerm_user_assigned_identity.app.client_id};Authorization=AAD"
    "AZURE_CLIENT_ID"                           = azurerm_user_assigned_identity.app.client_id
    # secrets come from Key Vault with the same identity
    "KEY_VAULT_URL"               = azurerm_key_vault.main.vault_uri
    "DEFENDER_CLIENT_SECRET_NAME" = azurerm_key_vault_secret.defender_client_secret.name
    "NOXYS_SIGNING_SECRET_NAME"   = azurerm_key_vault_secret.noxys_signing_secret.name
    "DEFENDER_TENANT_ID"          = local.tenant_id
    "DEFENDER_CLIENT_ID"          = var.defender_client_id
    "DEFENDER_CLOUD"              = var.defender_cloud
    # trigger bindings resolve these names: they must exist as app settings
    "EVENTS_QUEUE_NAME"          = "noxys-events"
    "EVENTS_PRIORITY_QUEUE_NAME" = "noxys-events-priority"
    "HEALTH_SCHEDULE"            = "0 0 * * * *"
    "HUNTING_SCHEDULE"           = "*/30 * * * * *"
    "HUNTING_QUEUE_NAME"         = "noxys-hunting"
    "FORWARD_EVENT_TYPES"        = var.forward_event_types
    "INTEGRATION_ENABLED"        = "true"
    "INCIDENT_TAGGING"           = var.incident_tagging
    "ALERT_FALLBACK"             = var.alert_fallback
    "HUNTING_INGESTION_ENDPOINT" = var.enable_hunting_table ? azurerm_monitor_data_collection_endpoint.hunting[0].logs_ingestion_endpoint : ""
    "HUNTING_DCR_IMMUTABLE_ID"   = var.enable_hunting_table ? azurerm_monitor_data_collection_rule.hunting[0].immutable_id : ""
    "HUNTING_STREAM_NAME"        = "Custom-NoxysInteractions"
  }
}

resource "azurerm_service_plan" "main" {
  #checkov:skip=CKV_AZURE_225:Flex Consumption zone redundancy is a regional opt-in; enable it where the region supports it.
  #checkov:skip=CKV_AZURE_212:Flex Consumption scales from zero by design; an always-ready instance is an option for the webhook.
  name                = "plan-${local.resource_token}"
  resource_group_name = azurerm_resource_group.main.name
  location            = var.location
  os_type             = "Linux"
  sku_name            = "FC1"
  tags                = local.tags
}

resource "azurerm_function_app_flex_consumption" "main" {
  #checkov:skip=CKV_AZURE_221:Noxys calls the webhook from the internet; it is protected by the function key, a Standard Webhooks signature and an optional bearer token.
  #checkov:skip=CKV_AZURE_56:Entra sign-in (Easy Auth) cannot front a webhook called by a third-party SaaS; see CKV_AZURE_221.
  name                              = local.function_name
  resource_group_name               = azurerm_resource_group.main.name
  location                          = var.location
  service_plan_id                   = azurerm_service_plan.main.id
  storage_container_type            = "blobContainer"
  storage_container_endpoint        = "${azurerm_storage_account.main.primary_blob_endpoint}${azurerm_storage_container.deployment.name}"
  storage_authentication_type       = "UserAssignedIdentity"
  storage_user_assigned_identity_id = azurerm_user_assigned_identity.app.id
  runtime_name                      = "python"
  runtime_version                   = "3.11"
  maximum_instance_count            = var.maximum_instance_count
  instance_memory_in_mb             = var.instance_memory_mb
  https_only                        = true
  public_network_access_enabled     = true
  app_settings                      = local.app_settings
  tags                              = merge(local.tags, { "azd-service-name" = "api" })

  identity {
    type         = "UserAssigned"
    identity_ids = [azurerm_user_assigned_identity.app.id]
  }

  site_config {
    minimum_tls_version = "1.2"
    http2_enabled       = true
  }
}
