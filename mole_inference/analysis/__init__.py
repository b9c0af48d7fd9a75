"""Pictures of a MoLe-VLA model and its runs: routing statistics on real frames (`mole-vla analyze`) and
matplotlib figures (headless Agg) that sim eval, the demo and the benchmarks can write next to their numbers.

Nothing here is imported by `import mole_inference`; matplotlib and torch load when a function needs them.
"""
