"""Emulators of Entra ID and Defender for Endpoint that speak their real wire protocols."""
