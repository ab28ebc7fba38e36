"""Integrations of sutradb with other libraries (each module imports its library on import)."""
