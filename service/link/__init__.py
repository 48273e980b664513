"""The front <-> engine link of ``--fronts N``: the transport (transport.py), its messages, one type
per op (messages.py), the engine side (engine_host.py) and the front side (remote_engine.py, which
imports only api/ and link/).
"""
