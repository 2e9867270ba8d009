// Azure Monitor alerts on what the connector logs: events given up on, functions failing,
// the health check failing.
param location string
param tags object
param namePrefix string
param actionGroupName string
param appInsightsId string
param alertEmail string

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

var rules = [
  {
    name: 'noxys-dead-letters-${namePrefix}'
    title: 'Noxys connector: events given up on (dead letter or poison queue not empty)'
    severity: 2
    window: 'PT15M'
    query: 'traces | where message contains "dead_letter" or message contains "-poison"'
  }
  {
    name: 'noxys-function-failures-${namePrefix}'
    title: 'Noxys connector: function executions failing'
    severity: 2
    window: 'PT15M'
    query: 'requests | where success == false'
  }
  {
    name: 'noxys-health-failing-${namePrefix}'
    title: 'Noxys connector: health check failing (connection, permission or secret expiry)'
    severity: 1
    window: 'PT2H'
    query: 'traces | where message startswith "health: ✗" or message has "connectivity FAILED" or message has "EXPIRED" or (message has "health:" and severityLevel >= 3)'
  }
]

resource alertRules 'Microsoft.Insights/scheduledQueryRules@2023-03-15-preview' = [for rule in rules: {
  name: rule.name
  location: location
  tags: tags
  properties: {
    displayName: rule.title
    severity: rule.severity
    enabled: true
    scopes: [appInsightsId]
    evaluationFrequency: 'PT5M'
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
