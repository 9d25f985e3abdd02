"""`python -m kes.streams.cli`: the `kes` command."""

import sys

from kes.streams.cli.commands import main

sys.exit(main())
