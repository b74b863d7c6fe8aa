"""Case services: the only code that changes cases, publishes, or audits them."""
