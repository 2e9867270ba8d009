// Azure Monitor alerts on the connector's OpenTelemetry metrics (numbers, never log wording): dead
// letters, poison messages, the health check failing twice, secrets expiring, the response circuit,
// failing functions and, optionally, silence from Noxys. The rules live in ../alerts/rules.json,
// shared with Terraform; docs/operations.md maps each to the command that diagnoses it.
param location string
param tags object
param namePrefix string
param actionGroupName string
param workspaceId string
param alertEmail string

@description('Alert when no event has been received for this many hours (0: never; at most 48).')
@minValue(0)
@maxValue(48)
param noEventsAlertHours int = 0

var defined = loadJsonContent('../alerts/rules.json')
var noEvents = (noEventsAlertHours > 0) ? [union(defined.noEvents, { window: 'PT${noEventsAlertHours}H' })] : []
var rules = concat(defined.rules, noEvents)

resource actionGroup 'Microsoft.Insights/actionGroups@2023-01-01' = {
  name: actionGroupName
  location: 'global'
  tags: tags
  properties: {
    groupShortName: 'noxys'
    enabled: true
    emailReceivers: empty(alertEmail) ? [] : [
      { name: 'operator', emailAddress: alertEmail, useCommonAlertSchema: true }
    ]
  }
}

resource alertRules 'Microsoft.Insights/scheduledQueryRules@2023-03-15-preview' = [for rule in rules: {
  name: 'noxys-${rule.name}-${namePrefix}'
  location: location
  tags: tags
  properties: {
    displayName: rule.title
    severity: rule.severity
    enabled: true
    scopes: [workspaceId]
    evaluationFrequency: rule.frequency
    windowSize: rule.window
    criteria: {
      allOf: [
        {
          query: rule.query
          timeAggregation: 'Count'
          operator: 'GreaterThan'
          threshold: 0
          failingPeriods: { numberOfEvaluationPeriods: 1, minFailingPeriodsToAlert: 1 }
        }
      ]
    }
    actions: { actionGroups: [actionGroup.id] }
  }
}]
