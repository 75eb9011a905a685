"""Serving-side policy around the double-blind protocols (query budgets, rate limits)."""
