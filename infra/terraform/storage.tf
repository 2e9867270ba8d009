# Storage for the Functions host, the queues and the state tables; Entra-only (no shared keys).
resource "azurerm_storage_account" "main" {
  #checkov:skip=CKV_AZURE_35:Flex Consumption without VNet integration reaches storage over its public endpoint; access is Entra-only (shared keys disabled).
  #checkov:skip=CKV_AZURE_59:Same reason: the public endpoint stays on, with shared-key access disabled.
  #checkov:skip=CKV2_AZURE_1:Microsoft-managed keys; the data held is PII-free (event envelopes without values).
  #checkov:skip=CKV_AZURE_206:ZRS is chosen over GRS: queue state is transient and zone-redundant.
  #checkov:skip=CKV2_AZURE_33:No private endpoint without VNet integration (see CKV_AZURE_35).
  #checkov:skip=CKV_AZURE_33:Queue service logging goes to Azure Monitor diagnostic settings, not classic storage analytics logs.
  #checkov:skip=CKV2_AZURE_41:No SAS is ever issued: shared-key access (and so SAS) is disabled.
  name                            = "st${local.resource_token}"
  resource_group_name             = azurerm_resource_group.main.name
  location                        = var.location
  account_kind                    = "StorageV2"
  account_tier                    = "Standard"
  account_replication_type        = "ZRS"
  shared_access_key_enabled       = false
  default_to_oauth_authentication = true
  allow_nested_items_to_be_public = false
  min_tls_version                 = "TLS1_2"
  https_traffic_only_enabled      = true
  public_network_access_enabled   = true
  tags                            = local.tags

  network_rules {
    default_action = "Allow"
    bypass         = ["AzureServices"]
  }

  blob_properties {
    delete_retention_policy {
      days = 7
    }
    container_delete_retention_policy {
      days = 7
    }
  }
}

resource "azurerm_storage_container" "deployment" {
  #checkov:skip=CKV2_AZURE_21:Holds only the deployment package; storage activity goes to Azure Monitor diagnostic settings.
  name                  = "app-package-${substr(local.function_name, 0, 32)}"
  storage_account_id    = azurerm_storage_account.main.id
  container_access_type = "private"
}

resource "azurerm_storage_queue" "main" {
  for_each           = toset(local.queues)
  name               = each.value
  storage_account_id = azurerm_storage_account.main.id
}
