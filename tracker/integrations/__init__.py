"""Inbound adapters: where runs come from (APScheduler), where jobs are managed (FastAPI)."""
