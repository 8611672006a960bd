"""Training drafters for a frozen model: mask slots, the draft head, the attention head."""
