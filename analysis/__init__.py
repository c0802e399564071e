"""Statistics over activation stores (later issues)."""
