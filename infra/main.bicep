// The Noxys → Defender for Endpoint connector: everything it needs, with one user-assigned
// managed identity and no shared keys. `azd up` feeds the parameters from main.parameters.json.
targetScope = 'subscription'

@minLength(1)
@maxLength(64)
@description('Name of the azd environment; used to name and tag every resource.')
param environmentName string

@minLength(1)
@description('Azure region for every resource.')
param location string

@description('Resource group name; empty means rg-<environmentName>.')
param resourceGroupName string = ''

@description('Entra tenant of the Defender app registration; empty means the deploying tenant.')
param defenderTenantId string = ''


@description('Client (application) id of the Defender app registration.')
param defenderClientId string

@secure()
@description('Client secret of the Defender app registration; stored in Key Vault only. Written only when given: leave it empty on later provisions so a rotated secret is never rolled back.')
param defenderClientSecret string = ''

@description('When the client secret expires in Entra ID (ISO 8601, e.g. 2028-11-27T00:00:00Z); set as the Key Vault secret expiry so the health check can warn.')
param defenderClientSecretExpiry string = ''

@secure()
@description('Noxys webhook signing secret (whsec_...), or several separated by spaces during rotation. Written only when given.')
param noxysSigningSecret string = ''

@secure()
@description('Bearer token Noxys is to send with each webhook call (Noxys → Webhooks → auth token); stored in Key Vault only, written only when given.')
param noxysBearerToken string = ''

@description('Require Noxys\'s bearer token: the app setting NOXYS_BEARER_TOKEN becomes a Key Vault reference to the secret noxys-bearer-token (given above, or set in the vault by the operator). Kept across provisions: it is not a secret.')
param requireBearerToken bool = false

@description('Suffix of the Key Vault name, new for every lifecycle of the environment (the azd hooks draw one): purge protection keeps a deleted vault\'s name for 90 days.')
@maxLength(6)
param keyVaultSuffix string = ''

@allowed(['global', 'us', 'eu', 'uk', 'au', 'swa', 'ina', 'aea', 'gcc', 'gcc-high'])
@description('Defender cloud/region: sets API URL, sign-in authority and token scope together.')
param defenderCloud string = 'global'

@minValue(40)
@maxValue(1000)
@description('Most instances per scale group (Flex Consumption accepts 40 to 1000) (on Flex the HTTP functions share one group, each queue or timer function is a group of its own, so the queue lanes can reach this many instances each). The shared pacing budget in Table Storage holds Defender\'s 15 alerts a minute whatever the count; more instances only wait for it.')
param maximumInstanceCount int = 40

@allowed([512, 2048, 4096])
param instanceMemoryMB int = 2048

@description('Comma-separated Noxys event types raised as Defender alerts.')
param forwardEventTypes string = 'interaction.policy_violated,interaction.high_risk,alert.severity_critical,alert.severity_high'

@allowed(['graph', 'legacy', 'off'])
param incidentTagging string = 'graph'

@allowed(['none', 'graph'])
param alertFallback string = 'none'

@description('Automated response rules file, relative to the app root (e.g. samples/response-rules.json); empty: no response.')
param responseRulesFile string = ''

@description('Combined risk score weights and thresholds file, relative to the app root; empty: the defaults.')
param riskConfigFile string = ''

@description('HTTPS endpoint the ticket action posts to; its signing secret goes in Key Vault as ticket-signing-secret.')
param ticketUrl string = ''

@description('Create the NoxysInteractions_CL hunting table, its Data Collection Rule, the detection rule and the workbook.')
param enableHuntingTable bool = false

@description('Resource id of an existing Microsoft Sentinel workspace for the hunting table; empty means the workspace created here (Sentinel is then enabled on it). An existing workspace needs infra/app/workspace.bicep deployed into its resource group first (docs/deploy.md): nothing of this deployment goes there.')
param sentinelWorkspaceId string = ''

@description('E-mail address for the Azure Monitor alerts; empty means no notification.')
param alertEmail string = ''

@description('Alert when no Noxys event has been received for this many hours (0: no such alert; at most 48).')
@minValue(0)
@maxValue(48)
param noEventsAlertHours int = 0

@description('Object id of the operator (azd fills in whoever runs it): gets Key Vault Secrets Officer on the vault (rotation) and Storage Table Data Contributor on the account (the on/off switch). Empty: nobody.')
param principalId string = ''

@allowed(['User', 'Group', 'ServicePrincipal'])
@description('Kind of principalId (azd fills it).')
param principalType string = 'User'

var abbrs = loadJsonContent('abbreviations.json')
var resourceToken = toLower(uniqueString(subscription().id, environmentName, location))
var tags = { 'azd-env-name': environmentName }
var functionAppName = '${abbrs.functionApp}${resourceToken}'
var rgName = !empty(resourceGroupName) ? resourceGroupName : '${abbrs.resourceGroup}${environmentName}'
var tenantForDefender = !empty(defenderTenantId) ? defenderTenantId : tenant().tenantId
var logAnalyticsName = '${abbrs.logAnalytics}${resourceToken}'

resource rg 'Microsoft.Resources/resourceGroups@2024-03-01' = {
  name: rgName
  location: location
  tags: tags
}

module identity 'app/identity.bicep' = {
  name: 'identity'
  scope: rg
  params: {
    name: '${abbrs.managedIdentity}${resourceToken}'
    location: location
    tags: tags
  }
}

module monitoring 'app/monitoring.bicep' = {
  name: 'monitoring'
  scope: rg
  params: {
    logAnalyticsName: logAnalyticsName
    appInsightsName: '${abbrs.appInsights}${resourceToken}'
    location: location
    tags: tags
  }
}

module storage 'app/storage.bicep' = {
  name: 'storage'
  scope: rg
  params: {
    name: '${abbrs.storageAccount}${resourceToken}'
    location: location
    tags: tags
    deploymentContainerName: 'app-package-${take(functionAppName, 32)}'
  }
}

module keyVault 'app/keyvault.bicep' = {
  name: 'keyvault'
  scope: rg
  params: {
    name: '${abbrs.keyVault}${take(resourceToken, 13)}${keyVaultSuffix}'
    location: location
    tags: tags
    defenderClientSecret: defenderClientSecret
    defenderClientSecretExpiry: defenderClientSecretExpiry
    noxysSigningSecret: noxysSigningSecret
    noxysBearerToken: noxysBearerToken
    operatorPrincipalId: principalId
    operatorPrincipalType: principalType
  }
}

// Every module is scoped to this deployment's own resource group: azd down deletes each resource
// group that holds a resource of the deployment, so an existing Sentinel workspace's group gets
// nothing from here (its table and rule come from app/workspace.bicep, deployed there once).
module workspaceContent 'app/workspace.bicep' = if (enableHuntingTable && empty(sentinelWorkspaceId)) {
  name: 'workspace-content'
  scope: rg
  params: {
    workspaceName: logAnalyticsName
    onboardSentinel: true
    location: location
    tags: tags
  }
  dependsOn: [monitoring]
}

module hunting 'app/hunting.bicep' = if (enableHuntingTable) {
  name: 'hunting'
  scope: rg
  dependsOn: [workspaceContent] // the DCR's output stream must exist as a table first
  params: {
    location: location
    tags: tags
    workspaceId: !empty(sentinelWorkspaceId) ? sentinelWorkspaceId : monitoring.outputs.logAnalyticsId
    dceName: '${abbrs.dataCollectionEndpoint}${resourceToken}'
    dcrName: '${abbrs.dataCollectionRule}${resourceToken}'
    publisherPrincipalId: identity.outputs.principalId
  }
}

module app 'app/function.bicep' = {
  name: 'function'
  scope: rg
  params: {
    name: functionAppName
    planName: '${abbrs.plan}${resourceToken}'
    location: location
    tags: tags
    identityId: identity.outputs.id
    identityClientId: identity.outputs.clientId
    storageAccountName: storage.outputs.name
    deploymentContainerUrl: '${storage.outputs.blobEndpoint}${storage.outputs.deploymentContainerName}'
    appInsightsConnectionString: monitoring.outputs.appInsightsConnectionString
    keyVaultUrl: keyVault.outputs.uri
    keyVaultName: keyVault.outputs.name
    requireBearerToken: requireBearerToken
    defenderTenantId: tenantForDefender
    defenderClientId: defenderClientId
    defenderCloud: defenderCloud
    forwardEventTypes: forwardEventTypes
    incidentTagging: incidentTagging
    alertFallback: alertFallback
    responseRulesFile: responseRulesFile
    riskConfigFile: riskConfigFile
    ticketUrl: ticketUrl
    huntingIngestionEndpoint: enableHuntingTable ? hunting.outputs.ingestionEndpoint : ''
    huntingDcrImmutableId: enableHuntingTable ? hunting.outputs.dcrImmutableId : ''
    maximumInstanceCount: maximumInstanceCount
    instanceMemoryMB: instanceMemoryMB
  }
  dependsOn: [rolesReady] // the site's first publish writes the package with the identity's blob role
}

module roles 'app/roles.bicep' = {
  name: 'roles'
  scope: rg
  params: {
    principalId: identity.outputs.principalId
    storageAccountName: storage.outputs.name
    keyVaultName: keyVault.outputs.name
    appInsightsName: monitoring.outputs.appInsightsName
    operatorPrincipalId: principalId
    operatorPrincipalType: principalType
  }
}

// A new role assignment takes a while to reach the storage data plane: the site (and so azd's
// publish right after provisioning) waits for it once; an unchanged script is not run again.
module rolesReady 'app/wait.bicep' = {
  name: 'wait-roles'
  scope: rg
  params: {
    name: 'wait-roles'
    location: location
    tags: tags
    seconds: 90
  }
  dependsOn: [roles]
}

module alerts 'app/alerts.bicep' = {
  name: 'alerts'
  scope: rg
  params: {
    location: location
    tags: tags
    namePrefix: resourceToken
    actionGroupName: '${abbrs.actionGroup}${resourceToken}'
    workspaceId: monitoring.outputs.logAnalyticsId
    alertEmail: alertEmail
    noEventsAlertHours: noEventsAlertHours
  }
}

output AZURE_LOCATION string = location
output AZURE_TENANT_ID string = tenant().tenantId
output AZURE_RESOURCE_GROUP string = rg.name
output WEBHOOK_URL string = 'https://${app.outputs.defaultHostName}/api/noxys/events'
output FUNCTION_APP_NAME string = app.outputs.name
output KEY_VAULT_NAME string = keyVault.outputs.name
// what `python -m shared switch` needs on a workstation (AzureWebJobsStorage__tableServiceUri)
output STORAGE_TABLE_ENDPOINT string = storage.outputs.tableEndpoint
output DEPLOYER_PRINCIPAL_ID string = principalId
