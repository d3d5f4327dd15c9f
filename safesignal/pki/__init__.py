"""pki: see README, Architecture."""
