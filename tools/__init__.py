"""Development tools: the local Functions host and the cloud emulators. Never deployed."""
