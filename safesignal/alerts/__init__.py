"""alerts: see README, Architecture."""
