"""PMC2 `client` package (see DESIGN.md, Layout)."""

__all__: list[str] = []
