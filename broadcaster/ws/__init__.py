"""The socket side: the WebSocket server, its connections and their input and output.

It knows nothing of InfluxDB or of what a topic means: it moves frames.
"""
