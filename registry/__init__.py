"""Registered models and their versions, stages and aliases (see DESIGN.md); built with the registry issue."""
