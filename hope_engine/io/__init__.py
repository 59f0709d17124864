"""Front doors outside Python: safe model loading, the `hope` command, the demo."""
