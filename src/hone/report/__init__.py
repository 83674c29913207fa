"""Renderings of results: terminal tables (rich), the HTML report, and plots. Nothing here computes
a number; every figure shown comes from a result dataclass."""
