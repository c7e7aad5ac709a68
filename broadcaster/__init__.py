"""broadcaster: live InfluxDB metrics pushed to dashboards over WebSocket, on Trio."""

__version__ = "0.1.0"
