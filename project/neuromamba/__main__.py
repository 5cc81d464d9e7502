"""``python -m neuromamba COMMAND ...``: the same as the ``neuromamba`` console command."""
import sys

from neuromamba.commands import main

sys.exit(main())
