"""Defender for Endpoint, Graph and incidents clients: auth per cloud, typed errors, one method
per API call. No business decisions live here; see ``shared.delivery`` for what to call when.
The package imports nothing itself, so that ``shared.defender.errors`` stays free of an HTTP stack."""
