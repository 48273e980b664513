"""lstm-service: the installed name of this repository's packages.

The repository keeps the product's layout (model/, export/, service/ at the
top); the wheel installs them as ``lstm_service.model``,
``lstm_service.export`` and ``lstm_service.service`` so they never collide
with a user's own ``model`` or ``service`` package.
"""
