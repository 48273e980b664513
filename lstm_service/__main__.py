"""``python -m lstm_service``: serve a model (the same as ``lstm-serve``)."""
import sys

from lstm_service.service.__main__ import main

sys.exit(main())
