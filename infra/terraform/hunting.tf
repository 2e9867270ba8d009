# The NoxysInteractions_CL hunting table in the Sentinel workspace, fed through a Data
# Collection Rule (Logs Ingestion API), plus the detection rule and the dashboard workbook.
# Column list: ../hunting/columns.json, shared with the code and with Bicep.
locals {
  hunting_columns    = jsondecode(file("${path.module}/../hunting/columns.json"))
  external_workspace = var.sentinel_workspace_id != ""
  workspace_id       = local.external_workspace ? var.sentinel_workspace_id : azurerm_log_analytics_workspace.main.id
  hunting_count      = var.enable_hunting_table ? 1 : 0
  # The Data Collection Endpoint and Rule must be in the workspace's region, which need not be the
  # app's. one(): the data source has no instance when the hunting table is off (null, unused then).
  workspace_location = local.external_workspace ? one(data.azapi_resource.sentinel_workspace[*].location) : azurerm_log_analytics_workspace.main.location
  hunting_table_body = {
    properties = {
      plan            = "Analytics"
      retentionInDays = 90
      schema = {
        name    = "NoxysInteractions_CL"
        columns = [for c in local.hunting_columns : { name = c.name, type = c.type == "datetime" ? "dateTime" : c.type }]
      }
    }
  }
}

data "azapi_resource" "sentinel_workspace" {
  count       = var.enable_hunting_table && var.sentinel_workspace_id != "" ? 1 : 0
  type        = "Microsoft.OperationalInsights/workspaces@2022-10-01"
  resource_id = var.sentinel_workspace_id
}

# On the workspace created here the table is a resource of this configuration, destroyed with it.
resource "azapi_resource" "hunting_table" {
  count     = var.enable_hunting_table && !local.external_workspace ? 1 : 0
  type      = "Microsoft.OperationalInsights/workspaces/tables@2022-10-01"
  name      = "NoxysInteractions_CL"
  parent_id = local.workspace_id
  body      = local.hunting_table_body
}

# On an existing workspace the table is written by a PUT action, which `terraform destroy` never
# undoes: the table and the interactions it holds stay with the workspace's owner.
resource "azapi_resource_action" "hunting_table_external" {
  count       = var.enable_hunting_table && local.external_workspace ? 1 : 0
  type        = "Microsoft.OperationalInsights/workspaces/tables@2022-10-01"
  resource_id = "${var.sentinel_workspace_id}/tables/NoxysInteractions_CL"
  method      = "PUT"
  body        = local.hunting_table_body
}

resource "azurerm_monitor_data_collection_endpoint" "hunting" {
  count                         = local.hunting_count
  name                          = "dce-${local.resource_token}"
  resource_group_name           = azurerm_resource_group.main.name
  location                      = local.workspace_location
  public_network_access_enabled = true
  tags                          = local.tags
}

resource "azurerm_monitor_data_collection_rule" "hunting" {
  count                       = local.hunting_count
  name                        = "dcr-${local.resource_token}"
  resource_group_name         = azurerm_resource_group.main.name
  location                    = local.workspace_location
  data_collection_endpoint_id = azurerm_monitor_data_collection_endpoint.hunting[0].id
  tags                        = local.tags

  stream_declaration {
    stream_name = "Custom-NoxysInteractions"
    dynamic "column" {
      for_each = local.hunting_columns
      content {
        name = column.value.name
        type = column.value.type
      }
    }
  }

  destinations {
    log_analytics {
      workspace_resource_id = local.workspace_id
      name                  = "sentinel"
    }
  }

  data_flow {
    streams       = ["Custom-NoxysInteractions"]
    destinations  = ["sentinel"]
    transform_kql = "source"
    output_stream = "Custom-NoxysInteractions_CL"
  }

  depends_on = [azapi_resource.hunting_table, azapi_resource_action.hunting_table_external]
}

resource "azurerm_role_assignment" "hunting_publisher" {
  count              = local.hunting_count
  scope              = azurerm_monitor_data_collection_rule.hunting[0].id
  role_definition_id = local.role_id.monitoring_metrics_publisher
  principal_id       = azurerm_user_assigned_identity.app.principal_id
  principal_type     = "ServicePrincipal"
}

resource "azurerm_sentinel_log_analytics_workspace_onboarding" "main" {
  count        = var.enable_hunting_table && var.sentinel_workspace_id == "" ? 1 : 0
  workspace_id = azurerm_log_analytics_workspace.main.id
}

resource "azurerm_sentinel_alert_rule_scheduled" "high_risk_burst" {
  count                      = local.hunting_count
  name                       = "noxys-high-risk-burst"
  log_analytics_workspace_id = local.workspace_id
  display_name               = "Noxys: 5 or more high-risk AI interactions from one device in an hour"
  description                = "A device sent five or more prompts that the connector scored above 0.8 (CombinedRiskScore: Noxys's score with the device's and user's patterns) to AI platforms within an hour."
  severity                   = "Medium"
  query                      = file("${path.module}/../kql/detection-high-risk-burst.kql")
  query_frequency            = "PT1H"
  query_period               = "PT1H"
  trigger_operator           = "GreaterThan"
  trigger_threshold          = 0
  tactics                    = ["Exfiltration"]

  entity_mapping {
    entity_type = "Host"
    field_mapping {
      identifier  = "FullName" # DeviceName holds the FQDN
      column_name = "DeviceName"
    }
  }

  depends_on = [azurerm_sentinel_log_analytics_workspace_onboarding.main, time_sleep.hunting_table_ready]
}

# A new custom table takes a while before a scheduled rule can resolve it in a query.
resource "time_sleep" "hunting_table_ready" {
  count           = local.hunting_count
  create_duration = "120s"
  depends_on      = [azapi_resource.hunting_table, azapi_resource_action.hunting_table_external]
}

resource "azurerm_application_insights_workbook" "noxys" {
  count               = local.hunting_count
  name                = uuidv5("url", "${local.workspace_id}/noxys-workbook")
  resource_group_name = azurerm_resource_group.main.name
  location            = var.location
  display_name        = "Noxys AI Firewall"
  category            = "sentinel"
  source_id           = lower(local.workspace_id)
  data_json           = replace(file("${path.module}/../workbook/noxys-workbook.json"), "__WORKSPACE_ID__", local.workspace_id)
  tags                = local.tags
}
