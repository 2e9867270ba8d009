#!/usr/bin/env sh
# azd hooks (azure.yaml):
#   preprovision   draw a Key Vault name suffix for this environment if it has none yet
#   postprovision  forget the secret values in the azd environment once they are in Key Vault, so
#                  that a later `azd provision` never writes them again (a rotation done with
#                  `az keyvault secret set` is never rolled back, a retired signing secret never
#                  comes back), and the values do not linger in .azure/<env>/.env
#   postdown       draw a new suffix: purge protection keeps the deleted vault's name for 90 days,
#                  so the next `azd up` needs another name
set -eu
suffix() { od -An -N3 -tx1 /dev/urandom | tr -d ' \n'; }
case "${1:-}" in
  preprovision)
    if [ -z "$(azd env get-value KEY_VAULT_SUFFIX 2>/dev/null || true)" ]; then
      azd env set KEY_VAULT_SUFFIX "$(suffix)"
    fi ;;
  postprovision)
    azd env set DEFENDER_CLIENT_SECRET ""
    azd env set NOXYS_SIGNING_SECRET ""
    azd env set NOXYS_BEARER_TOKEN ""
    echo "Secrets are in Key Vault; their values were removed from the azd environment (rotation: docs/deploy.md)." ;;
  postdown)
    azd env set KEY_VAULT_SUFFIX "$(suffix)"
    echo "New Key Vault name suffix drawn for the next 'azd up' (the deleted vault keeps its name for 90 days)." ;;
  *) echo "usage: $0 preprovision|postprovision|postdown" >&2; exit 2 ;;
esac
