"""dataeng-gym: a Gymnasium environment for autonomous agentic data engineering.

Importing the package is cheap: it registers the environments with Gymnasium and nothing else.
Heavy extras (Ray, W&B, vLLM, peft) are imported where they are used.
"""

from dataeng_gym.errors import DataEngError

__all__ = ["DataEngError", "__version__"]
__version__ = "0.1.0"

import dataeng_gym.envs  # noqa: E402,F401  (registers the environments)
