"""Reports built from analysis tables (later issues)."""
