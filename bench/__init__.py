"""liuhen's performance benchmarks (issue 8): ``python -m bench`` measures the product
against baselines run on the same input in the same run and publishes the figures in
docs/PERFORMANCE.md.

Owns: generating and caching the input, driving the product's own recording, signing and
hashing code as the daemon does, timing it, comparing it with the C tools that do the
same job, and writing ``bench/results.json``, ``bench/plots/*.png`` and a table.
Must not: change how the product works; a slow product path is reported, not patched
here.
"""
