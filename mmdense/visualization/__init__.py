"""Visualizers and vis backends (registered in mmdense.registry.VISUALIZERS / VISBACKENDS)."""
