"""The docker backend (the only user of the docker SDK: engine.py)."""
