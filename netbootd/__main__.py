"""``python -m netbootd`` runs the command line."""

import sys

from netbootd.cli import main

sys.exit(main())
