"""`python -m composer` is the `composer` command."""

from composer.cli import entry

entry()
