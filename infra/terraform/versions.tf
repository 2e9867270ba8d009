terraform {
  required_version = ">= 1.6"
  required_providers {
    # 4.58 is the first release that can apply this configuration: rbac_authorization_enabled on
    # Key Vault, storage_account_id on queues (4.46), maximum_instance_count below 40 (4.58).
    # Below 5.0: a major release may rename what this configuration uses.
    azurerm = {
      source  = "hashicorp/azurerm"
      version = ">= 4.58, < 5.0"
    }
    # The Function App (Microsoft.Web/sites) and the custom table are azapi resources; 2.x is the
    # release line whose `body` is an HCL object and whose data source exports `location`.
    azapi = {
      source  = "Azure/azapi"
      version = ">= 2.2, < 3.0"
    }
    # time_sleep: Entra role assignments take a while to reach the Key Vault data plane.
    time = {
      source  = "hashicorp/time"
      version = ">= 0.12, < 1.0"
    }
    # random_string: the Key Vault name suffix, new for every lifecycle of the deployment.
    random = {
      source  = "hashicorp/random"
      version = ">= 3.6, < 4.0"
    }
  }
}

provider "azurerm" {
  features {
    key_vault {
      # Purge protection keeps a deleted vault for 90 days; the vault name carries a random suffix
      # so that a destroy + apply creates a new vault instead of colliding with the deleted one.
      purge_soft_delete_on_destroy    = false
      recover_soft_deleted_key_vaults = false
    }
  }
  # Shared keys are disabled on the storage account: the provider must use Entra ID too.
  storage_use_azuread = true
  subscription_id     = var.subscription_id
}

provider "azapi" {}
