import sys

from splitsde.apps.cli import main

sys.exit(main())
