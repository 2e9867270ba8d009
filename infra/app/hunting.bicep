// The pipeline into NoxysInteractions_CL, in the connector's own resource group: the Data
// Collection Endpoint and Rule (Logs Ingestion API), the app's right to publish, and the
// dashboard workbook. The table and the detection rule live on the workspace (workspace.bicep).
// Column list: ../hunting/columns.json, shared with the code and with Terraform.
param location string
param tags object
param workspaceId string
param dceName string
param dcrName string
param publisherPrincipalId string

var columns = loadJsonContent('../hunting/columns.json')
var monitoringMetricsPublisher = '3913510d-42f4-4e42-8a64-420c390055eb'

// read only (`existing` is never part of what azd deletes): the workspace's region
resource workspace 'Microsoft.OperationalInsights/workspaces@2023-09-01' existing = {
  name: last(split(workspaceId, '/'))
  scope: resourceGroup(split(workspaceId, '/')[2], split(workspaceId, '/')[4])
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

// The workbook opens on this workspace (fallbackResourceIds) and offers a picker for any other.
resource workbook 'Microsoft.Insights/workbooks@2023-06-01' = {
  name: guid(workspaceId, 'noxys-workbook')
  location: location
  tags: tags
  kind: 'shared'
  properties: {
    displayName: 'Noxys AI Firewall'
    category: 'sentinel'
    sourceId: workspaceId
    serializedData: replace(loadTextContent('../workbook/noxys-workbook.json'), '__WORKSPACE_ID__', workspaceId)
  }
}

output ingestionEndpoint string = dce.properties.logsIngestion.endpoint
output dcrImmutableId string = dcr.properties.immutableId
