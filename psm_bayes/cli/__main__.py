"""``python -m psm_bayes.cli``: the same as the ``psm-bayes`` command."""

import sys

from psm_bayes.cli import main

sys.exit(main())
