"""`python -m composer` is the `composer` command."""

import sys

from composer.cli import main

sys.exit(main())
