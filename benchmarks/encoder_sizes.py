"""The encoder network the encoder benchmarks share (bench_encoder, profile_encoder, ab_encoder).

Plain data, no imports: profile_encoder must set up its private Numba cache before
anything imports eventsim.
"""

#: The benchmark network: 4 blocks, hidden 256, intermediate 1024, 4 heads, 32 positions, T = 32.
FULL = dict(blocks=4, hidden=256, intermediate=1024, heads=4, positions=32, steps=32, vocab=2000)
#: A small network for smoke runs (``--quick``).
QUICK = dict(blocks=1, hidden=32, intermediate=128, heads=2, positions=8, steps=8, vocab=200)
