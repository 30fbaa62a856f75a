"""Feature store: feature contracts, validation, point-in-time lookups."""
