"""PMC2 `sealed` package (see DESIGN.md, Layout)."""

__all__: list[str] = []
