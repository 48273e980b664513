"""The engine and what only it touches: sessions and their state, the per-call hold, quotas, the
scheduler, the batch runner and onnxruntime, scoring, sampling and vocabularies. Only the engine
mutates session state. Imports api/ (and persist/ for durability).
"""
