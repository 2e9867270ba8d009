# The Function App on Flex Consumption (Linux, Python 3.11), identity-based settings only.
# Every apply replaces the whole list (the azapi body): a setting an operator must be able to keep
# is a variable here or lives elsewhere. The bearer token is a Key Vault reference; the on/off
# switch lives in Table Storage (shared/delivery/hold.py), so INTEGRATION_ENABLED is not written.
locals {
  app_settings = {
    # host storage through the managed identity: no connection string, no key; the endpoints come
    # from the account, which the provider builds with its environment's storage suffix
    "AzureWebJobsStorage__blobServiceUri"       = trimsuffix(azurerm_storage_account.main.primary_blob_endpoint, "/")
    "AzureWebJobsStorage__queueServiceUri"      = trimsuffix(azurerm_storage_account.main.primary_queue_endpoint, "/")
    "AzureWebJobsStorage__tableServiceUri"      = trimsuffix(azurerm_storage_account.main.primary_table_endpoint, "/")
    "AzureWebJobsStorage__credential"           = "managedidentity"
    "AzureWebJobsStorage__clientId"             = azurerm_user_assigned_identity.app.client_id
    "APPLICATIONINSIGHTS_CONNECTION_STRING"     = azurerm_application_insights.main.connection_string
    "APPLICATIONINSIGHTS_AUTHENTICATION_STRING" = "ClientId=${azurerm_user_assigned_identity.app.client_id};Authorization=AAD"
    "AZURE_CLIENT_ID"                           = azurerm_user_assigned_identity.app.client_id
    # secrets come from Key Vault with the same identity
    "KEY_VAULT_URL"               = azurerm_key_vault.main.vault_uri
    "DEFENDER_CLIENT_SECRET_NAME" = azurerm_key_vault_secret.defender_client_secret.name
    "NOXYS_SIGNING_SECRET_NAME"   = azurerm_key_vault_secret.noxys_signing_secret.name
    "NOXYS_BEARER_TOKEN"          = var.require_bearer_token ? "@Microsoft.KeyVault(VaultName=${azurerm_key_vault.main.name};SecretName=noxys-bearer-token)" : ""
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
    "INCIDENT_TAGGING"           = var.incident_tagging
    "ALERT_FALLBACK"             = var.alert_fallback
    "RESPONSE_RULES_FILE"        = var.response_rules_file
    "RISK_CONFIG_FILE"           = var.risk_config_file
    "TICKET_URL"                 = var.ticket_url
    "TICKET_SIGNING_SECRET_NAME" = "ticket-signing-secret"
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

# The site is declared with azapi, exactly as infra/app/function.bicep declares it. The azurerm
# Flex Consumption resource writes an `AzureWebJobsStorage` connection string with an empty
# AccountKey beside the identity-based settings (provider issues #29693, #29149): the host prefers
# it and fails, and so would the app's own queue and table clients. With azapi the deployed app
# settings are exactly local.app_settings.
resource "azapi_resource" "function_app" {
  type      = "Microsoft.Web/sites@2024-04-01"
  name      = local.function_name
  parent_id = azurerm_resource_group.main.id
  location  = var.location
  tags      = merge(local.tags, { "azd-service-name" = "api" })

  identity {
    type         = "UserAssigned"
    identity_ids = [azurerm_user_assigned_identity.app.id]
  }

  body = {
    kind = "functionapp,linux"
    properties = {
      serverFarmId              = azurerm_service_plan.main.id
      httpsOnly                 = true
      keyVaultReferenceIdentity = azurerm_user_assigned_identity.app.id
      publicNetworkAccess       = "Enabled"
      siteConfig = {
        minTlsVersion = "1.2"
        ftpsState     = "Disabled"
        http20Enabled = true
        appSettings   = [for k, v in local.app_settings : { name = k, value = v }]
      }
      functionAppConfig = {
        deployment = {
          storage = {
            type  = "blobContainer"
            value = "${azurerm_storage_account.main.primary_blob_endpoint}${azurerm_storage_container.deployment.name}"
            authentication = {
              type                           = "UserAssignedIdentity"
              userAssignedIdentityResourceId = azurerm_user_assigned_identity.app.id
            }
          }
        }
        # Per scale group on Flex: the HTTP functions share one group, each queue or timer
        # function is a group of its own. Defender's quota is held by the shared pacing budget in
        # Table Storage, whatever the instance count; this bounds concurrency, not the quota.
        scaleAndConcurrency = {
          maximumInstanceCount = var.maximum_instance_count
          instanceMemoryMB     = var.instance_memory_mb
        }
        runtime = {
          name    = "python"
          version = "3.11"
        }
      }
    }
  }

  response_export_values = ["properties.defaultHostName"]

  # the first publish writes the package with the identity's blob role: wait until it is honoured
  depends_on = [time_sleep.app_roles_propagation]
}
