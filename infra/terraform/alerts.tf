# Azure Monitor alerts on what the connector logs.
locals {
  alert_rules = {
    dead-letters = {
      title    = "Noxys connector: events given up on (dead letter or poison queue not empty)"
      severity = 2
      window   = "PT15M"
      query    = "traces | where message contains \"dead_letter\" or message contains \"-poison\""
    }
    function-failures = {
      title    = "Noxys connector: function executions failing"
      severity = 2
      window   = "PT15M"
      query    = "requests | where success == false"
    }
    health-failing = {
      title    = "Noxys connector: health check failing (connection, permission or secret expiry)"
      severity = 1
      window   = "PT2H"
      query    = "traces | where message startswith \"health: ✗\" or message has \"connectivity FAILED\" or message has \"EXPIRED\" or (message has \"health:\" and severityLevel >= 3)"
    }
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
  scopes               = [azurerm_application_insights.main.id]
  severity             = each.value.severity
  evaluation_frequency = "PT5M"
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
