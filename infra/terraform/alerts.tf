# Azure Monitor alerts on the connector's OpenTelemetry metrics (numbers, never log wording), from
# ../alerts/rules.json, the file the Bicep flavour deploys too; docs/operations.md maps each rule to
# the command that diagnoses it.
locals {
  alert_definitions = jsondecode(file("${path.module}/../alerts/rules.json"))
  alert_rules = {
    for rule in concat(
      local.alert_definitions.rules,
      var.no_events_alert_hours > 0 ? [merge(local.alert_definitions.noEvents, { window = "PT${var.no_events_alert_hours}H" })] : []
    ) : rule.name => rule
  }
}

resource "azurerm_monitor_action_group" "main" {
  name                = "ag-${local.resource_token}"
  resource_group_name = azurerm_resource_group.main.name
  short_name          = "noxys"
  tags                = local.tags

  dynamic "email_receiver" {
    for_each = var.alert_email == "" ? [] : [var.alert_email]
    content {
      name                    = "operator"
      email_address           = email_receiver.value
      use_common_alert_schema = true
    }
  }
}

resource "azurerm_monitor_scheduled_query_rules_alert_v2" "main" {
  for_each             = local.alert_rules
  name                 = "noxys-${each.key}-${local.resource_token}"
  display_name         = each.value.title
  resource_group_name  = azurerm_resource_group.main.name
  location             = var.location
  scopes               = [azurerm_log_analytics_workspace.main.id]
  severity             = each.value.severity
  evaluation_frequency = each.value.frequency
  window_duration      = each.value.window
  tags                 = local.tags

  criteria {
    query                   = each.value.query
    time_aggregation_method = "Count"
    operator                = "GreaterThan"
    threshold               = 0
    failing_periods {
      number_of_evaluation_periods             = 1
      minimum_failing_periods_to_trigger_alert = 1
    }
  }

  action {
    action_groups = [azurerm_monitor_action_group.main.id]
  }
}
