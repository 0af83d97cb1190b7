"""`python -m dalle ...` is the same as the `dalle` command."""

import sys

from dalle.cli import main

sys.exit(main())
