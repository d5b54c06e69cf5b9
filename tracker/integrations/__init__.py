"""Inbound adapters: where runs and jobs come from (APScheduler) and where they are managed (FastAPI)."""
