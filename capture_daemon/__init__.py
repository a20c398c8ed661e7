"""understudy's capture side: spool → assembled workflow traces → SQLite store."""

__version__ = "0.1.0"
