"""Post stores, chosen by URL: SQL through SQLAlchemy Core, or MongoDB."""
