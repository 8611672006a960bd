"""Where drafts come from: prompt lookup, the trained draft heads, mask slots, and drafter files."""
