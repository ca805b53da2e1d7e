"""The web receiver: the provider's webhook rules, the WSGI app, the listeners."""
