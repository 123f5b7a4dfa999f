"""Dataset readers, embedded data and batching."""
