"""Statistics over activation stores: separability and layer skipping, the FFN's roles, confident-wrong errors,
token strength, attention heads, norm-based attribution, intervention effects; the index and read-only SQL."""
