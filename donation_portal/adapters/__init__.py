"""Adapters: database, models, settings, key files and the wiring of the libraries."""
