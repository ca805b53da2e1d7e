"""Core: states, exceptions, redaction, signing, backoff, keys, queue names, settings and
row types, the confirmation rule. Imports nothing above it."""
