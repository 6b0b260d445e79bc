"""Dense evaluation metrics and hooks (registered in mmdense.registry.METRICS)."""
