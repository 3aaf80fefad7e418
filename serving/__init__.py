"""Deployments and the prediction APIs (see DESIGN.md); built with the serving issue."""
