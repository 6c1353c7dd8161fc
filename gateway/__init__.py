"""PMC2 `gateway` package (see DESIGN.md, Layout)."""

__all__: list[str] = []
