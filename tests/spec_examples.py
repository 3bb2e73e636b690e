"""The worked checks of shared/spec/music-theory-reward.md, shared by several test modules."""

# 32 HOLDs: rule 3 gives -100 at steps 5..31, rule 2 +3 at steps 29..31; the sum is -2691.
ALL_HOLDS = [1] * 32

# The spec's long example: sum over its 32 steps -0.7934 (rounded), step 0 is 3.0, step 31 is 4.8065.
WORKED = [
    14, 1, 18, 1, 21, 1, 18, 1,
    14, 16, 18, 19, 21, 1, 1, 0,
    26, 1, 1, 1, 21, 1, 19, 18,
    16, 14, 1, 1, 14, 1, 1, 0,
]  # fmt: skip
