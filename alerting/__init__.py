"""Alerting service: clinical alarm policy, durable alarm store, HTTP API and ward dashboard."""
