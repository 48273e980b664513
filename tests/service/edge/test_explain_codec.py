"""Explain requests -> the explainer's selection (service/explain_codec.py): which oneof was set
decides units, and an unset top_k stays None (the server's default), not 0."""
from __future__ import annotations

from lstm_service.service.edge.explain_codec import selection_fields
from lstm_service.service.proto.lstm.v1 import lstm_pb2 as pb


def test_a_unit_range_or_top_units_and_an_explicit_top_k():
    ranged = selection_fields(pb.ExplainRequest(layers=[1], channels=["c"], unit_range=pb.UnitRange(start=2, end=5),
                                                top_k=0))
    assert ranged == dict(layers=[1], channels=["c"], unit_range=(2, 5), top_units=None, top_k=0)
    top = selection_fields(pb.ExplainRequest(top_units=8))
    assert top == dict(layers=[], channels=[], unit_range=None, top_units=8, top_k=None)
