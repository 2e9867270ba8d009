// ARM has no sleep: a deployment script that waits is how a template orders on time. Used where
// Azure answers "done" before the thing is usable: a new custom table before a Sentinel rule can
// query it, a new role assignment before the data plane honours it (the first package publish).
param name string
param location string
param tags object
@minValue(1)
@maxValue(600)
param seconds int

resource wait 'Microsoft.Resources/deploymentScripts@2023-08-01' = {
  name: name
  location: location
  tags: tags
  kind: 'AzureCLI'
  properties: {
    azCliVersion: '2.52.0'
    scriptContent: 'sleep ${seconds}'
    timeout: 'PT15M'
    retentionInterval: 'PT1H'
    cleanupPreference: 'Always'
  }
}
