output "webhook_url" {
  description = "Register this in Noxys (append ?code=<function key>)."
  value       = "https://${azapi_resource.function_app.output.properties.defaultHostName}/api/noxys/events"
}

output "function_app_name" {
  value = azapi_resource.function_app.name
}

output "key_vault_name" {
  value = azurerm_key_vault.main.name
}

# what `python -m shared switch` needs on a workstation (AzureWebJobsStorage__tableServiceUri)
output "storage_table_endpoint" {
  value = azurerm_storage_account.main.primary_table_endpoint
}
