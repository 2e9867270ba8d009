"""Delivery: from a queued event to a Defender alert, returning an Outcome instead of raising."""
