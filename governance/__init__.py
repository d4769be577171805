"""The governance service of meshfl: update checks, policies, aggregation strategies and the daemon."""
