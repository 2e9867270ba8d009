"""Defender for Endpoint client: auth per cloud, typed errors, one method per API call.

No business decisions live here; see ``shared.delivery`` for what to call when.
"""

from shared.defender.client import CallRecord, DefenderClient, DefenderError

__all__ = ["CallRecord", "DefenderClient", "DefenderError"]
