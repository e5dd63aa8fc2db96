"""Optional peer tools the benchmarks compare against; each is skipped with a clear line when absent."""
