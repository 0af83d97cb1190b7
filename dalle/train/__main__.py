"""`python -m dalle.train ...` is `dalle train ...`."""

import sys

from dalle.train.main import main

sys.exit(main(sys.argv[1:]))
