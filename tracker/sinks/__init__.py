"""Outbound adapters: one sub-package or module per destination."""
