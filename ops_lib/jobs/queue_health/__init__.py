"""Queue health: queue depth and latency, and every scheduled tool's freshness."""
