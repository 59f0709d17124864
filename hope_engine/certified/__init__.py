"""Taylor models (a jet plus a remainder interval) and the certified rule of each op."""
