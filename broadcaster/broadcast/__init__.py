"""The data side: the broadcast loop, the topics and the built-in topics."""
