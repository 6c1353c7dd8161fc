"""PMC2 `cloud_infer` package (see DESIGN.md, Layout)."""

__all__: list[str] = []
