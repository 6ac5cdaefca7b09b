"""The lake itself: its paths and stages, local and cloud storage, the run lock and its lease, leftovers of
interrupted runs, and the run summary."""
