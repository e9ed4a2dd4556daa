"""Runtime: backends behind one interface, the graph cache, async execution and the disk cache."""
