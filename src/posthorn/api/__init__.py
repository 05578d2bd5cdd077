"""The HTTP API: app factory, dependencies, error mapping and the native /v1 routes."""
