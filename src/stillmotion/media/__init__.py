"""Media: video encoding, probing and frame extraction; contact sheets."""
