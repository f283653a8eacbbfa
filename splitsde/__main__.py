import sys

from splitsde.cli import main

sys.exit(main())
