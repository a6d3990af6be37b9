"""The op entries, grouped by kind: elementwise.py, shape.py, reduce.py, kernel.py (fused)."""
