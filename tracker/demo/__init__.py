"""The demo behind ``tracker demo``: sample jobs of every kind, served with the HTTP API."""
