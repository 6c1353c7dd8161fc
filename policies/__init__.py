"""PMC2 `policies` package (see DESIGN.md, Layout)."""

__all__: list[str] = []
