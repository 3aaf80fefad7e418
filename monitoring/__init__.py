"""Prometheus metrics, aggregates, drift and alerts (see DESIGN.md)."""
