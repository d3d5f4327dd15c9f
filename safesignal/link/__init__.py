"""link: see README, Architecture."""
