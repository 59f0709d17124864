"""The values the entry points accept for their enumerated options, named once for the engine, the CLI and the panel."""

METHODS = ("exact", "hope")  # expand(method=...): the exact expansion, or the paper's unmixed rule
TERMS = ("total", "pure")    # expand(terms=...): every mixed partial, or the unmixed ones only
