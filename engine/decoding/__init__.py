"""Decoders: parallel unmasking (diffusion), verified drafts (verify), draft trees, unmasking policies."""
