"""Observability as code: the Grafana dashboards and Prometheus alerts of the workshop's services."""
