"""The demo data generator: a simulated PoP fleet written to InfluxDB.

Not part of the product package (the wheel holds ``broadcaster`` only); ``scripts/run`` and
``scripts/generate_metrics.py`` use it from the repository.
"""
