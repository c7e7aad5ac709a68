"""Running the process: the HTTP app and server, metrics, stats, open files, GC pacing."""
