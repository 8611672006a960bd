"""The language server: pygls handlers over a protocol-free service, stdio framing, positions, logs, local usage counts."""
