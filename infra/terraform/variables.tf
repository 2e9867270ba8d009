variable "subscription_id" {
  description = "Subscription to deploy into."
  type        = string
}

variable "environment_name" {
  description = "Short name used to name and tag every resource (like azd's environment name)."
  type        = string
}

variable "location" {
  description = "Azure region for every resource."
  type        = string
}

variable "resource_group_name" {
  description = "Resource group name; empty means rg-<environment_name>."
  type        = string
  default     = ""
}

variable "defender_tenant_id" {
  description = "Entra tenant of the Defender app registration; empty means the deploying tenant."
  type        = string
  default     = ""
}

variable "defender_client_id" {
  description = "Client (application) id of the Defender app registration."
  type        = string
}

variable "defender_client_secret" {
  description = "Client secret of the Defender app registration; stored in Key Vault only."
  type        = string
  sensitive   = true
}

variable "defender_client_secret_expiry" {
  description = "When the client secret expires in Entra ID (RFC 3339, e.g. 2028-11-27T00:00:00Z); set as the Key Vault secret expiry."
  type        = string
}

variable "noxys_signing_secret" {
  description = "Noxys webhook signing secret (whsec_...), or several separated by spaces during rotation."
  type        = string
  sensitive   = true
}

variable "noxys_signing_secret_expiry" {
  description = "Review date of the signing secret (Key Vault expiry is informational)."
  type        = string
}

variable "require_bearer_token" {
  description = "Require Noxys's bearer token: NOXYS_BEARER_TOKEN becomes a Key Vault reference to the secret noxys-bearer-token."
  type        = bool
  default     = false
}

variable "noxys_bearer_token" {
  description = "The bearer token Noxys sends (Noxys → Webhooks → auth token); written to Key Vault once."
  type        = string
  sensitive   = true
  default     = ""
}

variable "operator_object_ids" {
  description = "Entra object ids of the people or groups who operate the connector: Key Vault Secrets Officer on the vault (rotation) and Storage Table Data Contributor on the account (the on/off switch). Whoever runs apply gets the vault role anyway."
  type        = list(string)
  default     = []
}

variable "defender_cloud" {
  description = "Defender cloud/region: global, us, eu, uk, au, swa, ina, aea, gcc, gcc-high."
  type        = string
  default     = "global"
  validation {
    condition     = contains(["global", "us", "eu", "uk", "au", "swa", "ina", "aea", "gcc", "gcc-high"], var.defender_cloud)
    error_message = "defender_cloud must be one of global, us, eu, uk, au, swa, ina, aea, gcc, gcc-high."
  }
}

variable "maximum_instance_count" {
  description = "Most instances per scale group (on Flex the HTTP functions share one group; each queue or timer function is a group of its own). The shared pacing budget holds Defender's 15 alerts a minute whatever the count."
  type        = number
  default     = 40
  validation {
    condition     = var.maximum_instance_count >= 40 && var.maximum_instance_count <= 1000
    error_message = "Flex Consumption accepts 40 to 1000 instances per scale group."
  }
}

variable "instance_memory_mb" {
  description = "Flex Consumption instance memory."
  type        = number
  default     = 2048
}

variable "forward_event_types" {
  description = "Comma-separated Noxys event types raised as Defender alerts."
  type        = string
  default     = "interaction.policy_violated,interaction.high_risk,alert.severity_critical,alert.severity_high"
}

variable "incident_tagging" {
  description = "graph, legacy or off."
  type        = string
  default     = "graph"
}

variable "alert_fallback" {
  description = "none or graph (Graph beta createAlert when no anchor is found)."
  type        = string
  default     = "none"
}

variable "response_rules_file" {
  description = "Automated response rules file, relative to the app root (e.g. samples/response-rules.json); empty: no response."
  type        = string
  default     = ""
}

variable "risk_config_file" {
  description = "Combined risk score weights and thresholds file, relative to the app root; empty: the defaults."
  type        = string
  default     = ""
}

variable "ticket_url" {
  description = "HTTPS endpoint the ticket action posts to; its signing secret goes in Key Vault as ticket-signing-secret."
  type        = string
  default     = ""
}

variable "enable_hunting_table" {
  description = "Create the NoxysInteractions_CL table, its DCR, the detection rule and the workbook."
  type        = bool
  default     = false
}

variable "sentinel_workspace_id" {
  description = "Resource id of an existing Sentinel workspace for the hunting table; empty means the workspace created here (Sentinel is enabled on it). On an existing workspace the table is written but never deleted by destroy."
  type        = string
  default     = ""
}

variable "alert_email" {
  description = "E-mail address for the Azure Monitor alerts; empty means no notification."
  type        = string
  default     = ""
}

variable "no_events_alert_hours" {
  description = "Alert when no Noxys event has been received for this many hours (0: no such alert; at most 48)."
  type        = number
  default     = 0
  validation {
    condition     = var.no_events_alert_hours >= 0 && var.no_events_alert_hours <= 48
    error_message = "no_events_alert_hours is between 0 and 48."
  }
}
