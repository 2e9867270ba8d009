// Storage for the Functions host, the queues and the state tables. Shared keys are disabled:
// the app reaches it with its managed identity only.
param name string
param location string
param tags object
param deploymentContainerName string

var queues = ['noxys-events', 'noxys-events-priority', 'noxys-events-poison', 'noxys-events-priority-poison', 'noxys-hunting']

resource storage 'Microsoft.Storage/storageAccounts@2023-05-01' = {
  name: name
  location: location
  tags: tags
  kind: 'StorageV2'
  sku: { name: 'Standard_ZRS' }
  properties: {
    // checkov:skip=CKV_AZURE_35:Flex Consumption without VNet integration reaches storage over its public endpoint; access is Entra-only (shared keys disabled).
    // checkov:skip=CKV_AZURE_59:Same reason: the public endpoint stays on, with shared-key access disabled.
    // checkov:skip=CKV2_AZURE_1:Microsoft-managed keys; the data held is PII-free (event envelopes without values).
    // checkov:skip=CKV_AZURE_206:ZRS is chosen over GRS: queue state is transient and zone-redundant.
    // checkov:skip=CKV2_AZURE_33:No private endpoint without VNet integration (see CKV_AZURE_35).
    allowSharedKeyAccess: false
    allowBlobPublicAccess: false
    defaultToOAuthAuthentication: true
    minimumTlsVersion: 'TLS1_2'
    supportsHttpsTrafficOnly: true
    publicNetworkAccess: 'Enabled'
    networkAcls: {
      defaultAction: 'Allow'
      bypass: 'AzureServices'
    }
  }
}

resource blobService 'Microsoft.Storage/storageAccounts/blobServices@2023-05-01' = {
  parent: storage
  name: 'default'
  properties: {
    deleteRetentionPolicy: { enabled: true, days: 7 }
    containerDeleteRetentionPolicy: { enabled: true, days: 7 }
  }
}

resource deploymentContainer 'Microsoft.Storage/storageAccounts/blobServices/containers@2023-05-01' = {
  parent: blobService
  name: deploymentContainerName
  properties: { publicAccess: 'None' }
}

resource queueService 'Microsoft.Storage/storageAccounts/queueServices@2023-05-01' = {
  parent: storage
  name: 'default'
}

resource queue 'Microsoft.Storage/storageAccounts/queueServices/queues@2023-05-01' = [for q in queues: {
  parent: queueService
  name: q
}]

output name string = storage.name
output id string = storage.id
output blobEndpoint string = storage.properties.primaryEndpoints.blob
output tableEndpoint string = storage.properties.primaryEndpoints.table
output deploymentContainerName string = deploymentContainer.name
