"""Persistence: tables, migrations, and the repositories that are the only code running SQL."""
