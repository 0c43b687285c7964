"""The fedge client: the ClientApp, the client agent an institution runs, and its own data.

Nothing here sends a row anywhere: replies carry weights, metrics, a data fingerprint and counts.
The package imports nothing itself: Flower starts a fresh ClientApp process per message, and
that process should load only what forwarding a message needs (see ``client.client_app``).
"""
