"""Use cases shared by the API, the dialects, the SMTP server, the dashboard and the CLI."""
