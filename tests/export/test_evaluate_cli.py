"""python -m lstm_service.export.evaluate: the ONNX figure equals torch's, and it runs without torch."""
import json
import subprocess
import sys

from lstm_service.model.checkpoint import load_model
from lstm_service.model.data import load_split
from lstm_service.model.evaluate import validation_loss

# Run the CLI with torch made unimportable, as on a serving install.
WITHOUT_TORCH = ("import sys, runpy; sys.modules['torch'] = None; sys.argv = ['evaluate'] + sys.argv[1:]; "
                 "runpy.run_module('lstm_service.export.evaluate', run_name='__main__')")


def test_onnx_validation_matches_torch_without_importing_torch(tiny_model_dir, tmp_path):
    text = tmp_path / "text.txt"
    text.write_text("to be, or not to be, that is the question. " * 300)
    result = subprocess.run([sys.executable, "-c", WITHOUT_TORCH, "--model", str(tiny_model_dir), "--data", str(text)],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    figures = json.loads(result.stdout)
    expected = validation_loss(load_model(tiny_model_dir.parent / "checkpoint"), load_split(text).validation)
    assert abs(figures["fp32"]["validation_loss"] - expected) < 1e-4
    assert abs(figures["int8"]["validation_loss"] - expected) < 0.05
    assert "fp32: " in result.stderr


def test_unknown_precision_is_one_clear_line(tiny_model_dir, tmp_path):
    text = tmp_path / "text.txt"
    text.write_text("abc " * 100)
    result = subprocess.run([sys.executable, "-m", "lstm_service.export.evaluate", "--model", str(tiny_model_dir),
                             "--data", str(text), "--precision", "fp16"], capture_output=True, text=True, timeout=300)
    assert result.returncode == 2
    assert result.stderr.startswith("error:") and "fp16" in result.stderr and "Traceback" not in result.stderr


def test_torch_and_onnxruntime_read_the_validation_text_the_same_way():
    from lstm_service.model import data, evaluate

    assert (evaluate.EVAL_STREAMS, evaluate.EVAL_SEQ_LEN) == (data.EVAL_STREAMS, data.EVAL_SEQ_LEN)
