"""provisioning: see README, Architecture."""
