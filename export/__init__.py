"""Export trained checkpoints to ONNX (+ model.json) and check them against torch."""
