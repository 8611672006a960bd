"""The network: one decoder stack for every family, its attention, linear layers and KV cache."""
