"""PMC2 `enclave_app` package (see DESIGN.md, Layout)."""

__all__: list[str] = []
