"""``python -m lstm_service.service`` and the ``lstm-serve`` entry point: the server's main
lives in service/proc/main.py (the process room)."""
from .proc.main import main

if __name__ == "__main__":
    raise SystemExit(main())
