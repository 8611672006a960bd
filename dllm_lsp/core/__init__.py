"""The completion core (pure; no LSP types, no engine state): where to complete, what context, how to cut the answer."""
