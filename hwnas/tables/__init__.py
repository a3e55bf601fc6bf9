"""The lookup table: its schema and fingerprint (table), and views of it (view)."""
