"""HTTP both ways: the wire formats of the ecosystem's APIs (pure), our HTTP server, and the client of a remote FIM server."""
