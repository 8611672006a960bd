"""`python -m engine.bench`: the engine benchmark (steps.py)."""
import sys

from engine.bench.steps import main

sys.exit(main())
