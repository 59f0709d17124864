"""What the engine knows about each aten op: the registry and the rule families (imports only algebra and below)."""
