"""nvs: see README, Architecture."""
