output "webhook_url" {
  description = "Register this in Noxys (append ?code=<function key>)."
  value       = "https://${azurerm_function_app_flex_consumption.main.default_hostname}/api/noxys/events"
}

output "function_app_name" {
  value = azurerm_function_app_flex_consumption.main.name
}

output "key_vault_name" {
  value = azurerm_key_vault.main.name
}
