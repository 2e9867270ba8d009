// Key Vault (RBAC, soft delete, purge protection) holding the two secrets the app reads.
param name string
param location string
param tags object
// A secret is written only when a value is given: a provision after a rotation
// (`az keyvault secret set`, docs/deploy.md) must not roll it back, nor re-enable a retired version.
@secure()
param defenderClientSecret string = ''
param defenderClientSecretExpiry string = ''
@secure()
param noxysSigningSecret string = ''
@secure()
@description('Bearer token Noxys sends with each webhook call; the app setting is a Key Vault reference to it.')
param noxysBearerToken string = ''
@description('Object id of the operator who rotates secrets; empty: nobody is granted.')
param operatorPrincipalId string = ''
@allowed(['User', 'Group', 'ServicePrincipal'])
param operatorPrincipalType string = 'User'
@description('Review date of the signing secret (Key Vault expiry is informational: reads still work after it).')
param noxysSigningSecretExpiry string = dateTimeAdd(utcNow(), 'P2Y')

resource vault 'Microsoft.KeyVault/vaults@2023-07-01' = {
  name: name
  location: location
  tags: tags
  properties: {
    // checkov:skip=CKV_AZURE_109:The Flex Consumption app has no fixed outbound IP or VNet here; access is RBAC-only with the app's identity.
    // checkov:skip=CKV_AZURE_189:Same reason: the public endpoint stays on, RBAC decides.
    // checkov:skip=CKV2_AZURE_32:No private endpoint without VNet integration.
    tenantId: tenant().tenantId
    sku: { family: 'A', name: 'standard' }
    enableRbacAuthorization: true
    enableSoftDelete: true
    softDeleteRetentionInDays: 90
    enablePurgeProtection: true
    publicNetworkAccess: 'Enabled'
    networkAcls: {
      defaultAction: 'Allow'
      bypass: 'AzureServices'
    }
  }
}

resource defenderSecret 'Microsoft.KeyVault/vaults/secrets@2023-07-01' = if (!empty(defenderClientSecret)) {
  parent: vault
  name: 'defender-client-secret'
  properties: {
    // checkov:skip=CKV_AZURE_41:checkov does not read a conditional resource; exp is set below (for the Defender secret, from the Entra end date when it is given).
    // checkov:skip=CKV_AZURE_114:checkov does not read a conditional resource; contentType is set below.
    value: defenderClientSecret
    contentType: 'Entra ID client secret of the Defender app registration'
    attributes: {
      enabled: true
      exp: empty(defenderClientSecretExpiry) ? null : dateTimeToEpoch(defenderClientSecretExpiry)
    }
  }
}

resource signingSecret 'Microsoft.KeyVault/vaults/secrets@2023-07-01' = if (!empty(noxysSigningSecret)) {
  parent: vault
  name: 'noxys-signing-secret'
  properties: {
    // checkov:skip=CKV_AZURE_41:checkov does not read a conditional resource; exp is set below (for the Defender secret, from the Entra end date when it is given).
    // checkov:skip=CKV_AZURE_114:checkov does not read a conditional resource; contentType is set below.
    value: noxysSigningSecret
    contentType: 'Noxys webhook signing secret(s), whsec_..., space-separated'
    attributes: {
      enabled: true
      exp: dateTimeToEpoch(noxysSigningSecretExpiry)
    }
  }
}

resource bearerToken 'Microsoft.KeyVault/vaults/secrets@2023-07-01' = if (!empty(noxysBearerToken)) {
  parent: vault
  name: 'noxys-bearer-token'
  properties: {
    // checkov:skip=CKV_AZURE_41:checkov does not read a conditional resource; exp is set below (for the Defender secret, from the Entra end date when it is given).
    // checkov:skip=CKV_AZURE_114:checkov does not read a conditional resource; contentType is set below.
    value: noxysBearerToken
    contentType: 'Bearer token Noxys sends with each webhook call'
    attributes: {
      enabled: true
      exp: dateTimeToEpoch(noxysSigningSecretExpiry)
    }
  }
}

// On an RBAC vault, Owner has no data-plane access: without this role the operator's
// `az keyvault secret set` (rotation, the ticket secret) answers 403.
var keyVaultSecretsOfficer = 'b86a8fe4-44ce-4948-aee5-eccb2c155cd7'

resource operatorSecretsOfficer 'Microsoft.Authorization/roleAssignments@2022-04-01' = if (!empty(operatorPrincipalId)) {
  name: guid(vault.id, operatorPrincipalId, keyVaultSecretsOfficer)
  scope: vault
  properties: {
    principalId: operatorPrincipalId
    principalType: operatorPrincipalType
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', keyVaultSecretsOfficer)
  }
}

output name string = vault.name
output uri string = vault.properties.vaultUri
