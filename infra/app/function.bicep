// The Function App on Flex Consumption (Linux, Python 3.11), identity-based settings only.
param name string
param planName string
param location string
param tags object
param identityId string
param identityClientId string
param storageAccountName string
param deploymentContainerUrl string
param appInsightsConnectionString string
param keyVaultUrl string
param keyVaultName string
param defenderTenantId string
param defenderClientId string
param defenderCloud string
param forwardEventTypes string
param incidentTagging string
param alertFallback string
param responseRulesFile string
param riskConfigFile string
param requireBearerToken bool
param ticketUrl string
param huntingIngestionEndpoint string
param huntingDcrImmutableId string
param maximumInstanceCount int
param instanceMemoryMB int

// Every provision replaces the whole list: a setting an operator must be able to keep is either a
// parameter here or lives elsewhere. The bearer token is a Key Vault reference (its value is set
// in the vault, never here); the on/off switch lives in Table Storage (shared/delivery/hold.py),
// so INTEGRATION_ENABLED is deliberately not written: a redeploy cannot re-arm a connector.
var appSettings = {
  // host storage through the managed identity: no connection string, no key; the endpoints carry
  // the cloud's storage suffix (public, Azure Government, China, ...)
  AzureWebJobsStorage__blobServiceUri: 'https://${storageAccountName}.blob.${environment().suffixes.storage}'
  AzureWebJobsStorage__queueServiceUri: 'https://${storageAccountName}.queue.${environment().suffixes.storage}'
  AzureWebJobsStorage__tableServiceUri: 'https://${storageAccountName}.table.${environment().suffixes.storage}'
  AzureWebJobsStorage__credential: 'managedidentity'
  AzureWebJobsStorage__clientId: identityClientId
  APPLICATIONINSIGHTS_CONNECTION_STRING: appInsightsConnectionString
  APPLICATIONINSIGHTS_AUTHENTICATION_STRING: 'ClientId=${identityClientId};Authorization=AAD'
  AZURE_CLIENT_ID: identityClientId
  // secrets come from Key Vault with the same identity
  KEY_VAULT_URL: keyVaultUrl
  DEFENDER_CLIENT_SECRET_NAME: 'defender-client-secret'
  NOXYS_SIGNING_SECRET_NAME: 'noxys-signing-secret'
  NOXYS_BEARER_TOKEN: requireBearerToken ? '@Microsoft.KeyVault(VaultName=${keyVaultName};SecretName=noxys-bearer-token)' : ''
  DEFENDER_TENANT_ID: defenderTenantId
  DEFENDER_CLIENT_ID: defenderClientId
  DEFENDER_CLOUD: defenderCloud
  // trigger bindings resolve these names: they must exist as app settings
  EVENTS_QUEUE_NAME: 'noxys-events'
  EVENTS_PRIORITY_QUEUE_NAME: 'noxys-events-priority'
  HEALTH_SCHEDULE: '0 0 * * * *'
  HUNTING_SCHEDULE: '*/30 * * * * *'
  HUNTING_QUEUE_NAME: 'noxys-hunting'
  FORWARD_EVENT_TYPES: forwardEventTypes
  INCIDENT_TAGGING: incidentTagging
  ALERT_FALLBACK: alertFallback
  RESPONSE_RULES_FILE: responseRulesFile
  RISK_CONFIG_FILE: riskConfigFile
  TICKET_URL: ticketUrl
  TICKET_SIGNING_SECRET_NAME: 'ticket-signing-secret'
  HUNTING_INGESTION_ENDPOINT: huntingIngestionEndpoint
  HUNTING_DCR_IMMUTABLE_ID: huntingDcrImmutableId
  HUNTING_STREAM_NAME: 'Custom-NoxysInteractions'
}

resource plan 'Microsoft.Web/serverfarms@2024-04-01' = {
  name: planName
  location: location
  tags: tags
  kind: 'functionapp'
  sku: {
    tier: 'FlexConsumption'
    name: 'FC1'
  }
  properties: {
    // checkov:skip=CKV_AZURE_225:Flex Consumption zone redundancy is a regional opt-in; enable it where the region supports it.
    // checkov:skip=CKV_AZURE_212:Flex Consumption scales from zero by design; an always-ready instance is an option for the webhook.
    reserved: true
  }
}

resource functionApp 'Microsoft.Web/sites@2024-04-01' = {
  name: name
  location: location
  tags: union(tags, { 'azd-service-name': 'api' })
  kind: 'functionapp,linux'
  identity: {
    type: 'UserAssigned'
    userAssignedIdentities: { '${identityId}': {} }
  }
  properties: {
    // checkov:skip=CKV_AZURE_221:Noxys calls the webhook from the internet; it is protected by the function key, a Standard Webhooks signature and an optional bearer token.
    // checkov:skip=CKV_AZURE_56:Entra sign-in (Easy Auth) cannot front a webhook called by a third-party SaaS; see CKV_AZURE_221.
    // checkov:skip=CKV_AZURE_222:The webhook must be reachable by Noxys over the internet; see CKV_AZURE_221.
    // checkov:skip=CKV_AZURE_17:Noxys presents no client certificate; requests are authenticated by their signature.
    // checkov:skip=CKV_AZURE_212:Flex Consumption scales from zero by design; an always-ready instance is an option.
    // checkov:skip=CKV_AZURE_213:Flex Consumption has no health-check path setting; /api/health and the health timer cover it.
    serverFarmId: plan.id
    httpsOnly: true
    keyVaultReferenceIdentity: identityId
    publicNetworkAccess: 'Enabled'
    siteConfig: {
      minTlsVersion: '1.2'
      ftpsState: 'Disabled'
      http20Enabled: true
      appSettings: [for item in items(appSettings): { name: item.key, value: item.value }]
    }
    functionAppConfig: {
      deployment: {
        storage: {
          type: 'blobContainer'
          value: deploymentContainerUrl
          authentication: {
            type: 'UserAssignedIdentity'
            userAssignedIdentityResourceId: identityId
          }
        }
      }
      // Per scale group on Flex: the HTTP functions share one group, each queue or timer function is
      // a group of its own. Defender's quota is held by the shared pacing budget in Table Storage,
      // whatever the instance count; this bounds concurrency, not the quota.
      scaleAndConcurrency: {
        maximumInstanceCount: maximumInstanceCount
        instanceMemoryMB: instanceMemoryMB
      }
      runtime: {
        name: 'python'
        version: '3.11'
      }
    }
  }
}

output name string = functionApp.name
output defaultHostName string = functionApp.properties.defaultHostName
