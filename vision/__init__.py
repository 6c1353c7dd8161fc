"""PMC2 vision pipeline: data, classifiers, perturbation generator, neural codec."""

__all__: list[str] = []
