"""The contract between the edge and the engine: the engine operations (engine.py), the values that
cross it (values.py), request options and the service's errors. Imports nothing else of the service.
"""
