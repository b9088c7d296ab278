"""Built-in components; one algorithm per file."""
