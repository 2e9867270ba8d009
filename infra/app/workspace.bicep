// What must live on the Sentinel workspace itself: the NoxysInteractions_CL table and the
// detection rule (and Sentinel, on a workspace created here). Deployed by main.bicep on its own
// workspace; on an existing workspace elsewhere, deploy this file into that workspace's resource
// group once (docs/deploy.md): azd then deploys nothing there, so `azd down` — which deletes every
// resource group holding a resource of its deployment — never reaches it.
// Column list: ../hunting/columns.json, shared with the code and with Terraform.
param workspaceName string
param onboardSentinel bool = false
@description('Where the deployment script that waits for the new table runs.')
param location string = resourceGroup().location
param tags object = {}

var columns = loadJsonContent('../hunting/columns.json')

resource workspace 'Microsoft.OperationalInsights/workspaces@2023-09-01' existing = {
  name: workspaceName
}

resource table 'Microsoft.OperationalInsights/workspaces/tables@2022-10-01' = {
  parent: workspace
  name: 'NoxysInteractions_CL'
  properties: {
    plan: 'Analytics'
    retentionInDays: 90
    schema: {
      name: 'NoxysInteractions_CL'
      columns: [for c in columns: { name: c.name, type: c.type == 'datetime' ? 'dateTime' : c.type }]
    }
  }
}

resource sentinel 'Microsoft.SecurityInsights/onboardingStates@2024-03-01' = if (onboardSentinel) {
  scope: workspace
  name: 'default'
  properties: {}
}

// Sentinel validates the rule's query, and a new custom table takes a while before a query can
// resolve it ("One of the tables does not exist"): the same 120 s Terraform waits.
module tableReady 'wait.bicep' = {
  name: 'wait-hunting-table'
  params: {
    name: 'wait-hunting-table'
    location: location
    tags: tags
    seconds: 120
  }
  dependsOn: [table]
}

resource detection 'Microsoft.SecurityInsights/alertRules@2024-03-01' = {
  scope: workspace
  name: guid(workspace.id, 'noxys-high-risk-burst')
  kind: 'Scheduled'
  properties: {
    displayName: 'Noxys: 5 or more high-risk AI interactions from one device in an hour'
    description: 'A device sent five or more prompts that the connector scored above 0.8 (CombinedRiskScore: Noxys\'s score with the device\'s and user\'s patterns) to AI platforms within an hour.'
    severity: 'Medium'
    enabled: true
    query: loadTextContent('../kql/detection-high-risk-burst.kql')
    queryFrequency: 'PT1H'
    queryPeriod: 'PT1H'
    triggerOperator: 'GreaterThan'
    triggerThreshold: 0
    suppressionEnabled: false
    suppressionDuration: 'PT1H'
    tactics: ['Exfiltration']
    entityMappings: [
      {
        entityType: 'Host'
        fieldMappings: [{ identifier: 'FullName', columnName: 'DeviceName' }] // DeviceName holds the FQDN
      }
    ]
  }
  dependsOn: [sentinel, tableReady]
}

output tableName string = table.name
