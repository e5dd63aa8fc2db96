"""pelletsim.dem — discrete-element die compaction, the pipeline and the CLI (dem → fva, one way)."""
__version__ = "0.1.0"
