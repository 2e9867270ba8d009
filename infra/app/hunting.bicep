// The NoxysInteractions_CL hunting table in the Sentinel workspace, fed through a Data
// Collection Rule (Logs Ingestion API), plus the detection rule and the dashboard workbook.
// Column list: ../hunting/columns.json, shared with the code and with Terraform.
param location string
param tags object
param workspaceId string
param onboardSentinel bool
param dceName string
param dcrName string
param publisherPrincipalId string

var columns = loadJsonContent('../hunting/columns.json')
var monitoringMetricsPublisher = '3913510d-42f4-4e42-8a64-420c390055eb'
var workspaceName = last(split(workspaceId, '/'))

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

// The endpoint and the rule must be in the workspace's region, which need not be the app's.
resource dce 'Microsoft.Insights/dataCollectionEndpoints@2023-03-11' = {
  name: dceName
  location: workspace.location
  tags: tags
  properties: {
    networkAcls: { publicNetworkAccess: 'Enabled' }
  }
}

resource dcr 'Microsoft.Insights/dataCollectionRules@2023-03-11' = {
  name: dcrName
  location: workspace.location
  tags: tags
  properties: {
    dataCollectionEndpointId: dce.id
    streamDeclarations: {
      'Custom-NoxysInteractions': { columns: columns }
    }
    destinations: {
      logAnalytics: [
        { workspaceResourceId: workspaceId, name: 'sentinel' }
      ]
    }
    dataFlows: [
      {
        streams: ['Custom-NoxysInteractions']
        destinations: ['sentinel']
        transformKql: 'source'
        outputStream: 'Custom-NoxysInteractions_CL'
      }
    ]
  }
  dependsOn: [table]
}

resource publisher 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(dcr.id, publisherPrincipalId, monitoringMetricsPublisher)
  scope: dcr
  properties: {
    principalId: publisherPrincipalId
    principalType: 'ServicePrincipal'
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', monitoringMetricsPublisher)
  }
}

resource sentinel 'Microsoft.SecurityInsights/onboardingStates@2024-03-01' = if (onboardSentinel) {
  scope: workspace
  name: 'default'
  properties: {}
}

resource detection 'Microsoft.SecurityInsights/alertRules@2024-03-01' = {
  scope: workspace
  name: guid(workspaceId, 'noxys-high-risk-burst')
  kind: 'Scheduled'
  properties: {
    displayName: 'Noxys: 5 or more high-risk AI interactions from one device in an hour'
    description: 'A device sent five or more prompts that Noxys scored above 0.8 to AI platforms within an hour.'
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
  dependsOn: [sentinel, table]
}

resource workbook 'Microsoft.Insights/workbooks@2023-06-01' = {
  name: guid(workspaceId, 'noxys-workbook')
  location: location
  tags: tags
  kind: 'shared'
  properties: {
    displayName: 'Noxys AI Firewall'
    category: 'sentinel'
    sourceId: workspaceId
    serializedData: loadTextContent('../workbook/noxys-workbook.json')
  }
}

output ingestionEndpoint string = dce.properties.logsIngestion.endpoint
output dcrImmutableId string = dcr.properties.immutableId
