"""The shipped default policy documents (TOML package data; see ``policies.load_default``)."""
