"""Recurrent language models (LSTM family) written from the gate equations."""
