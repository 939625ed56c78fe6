import sys

from patina.core.cli import main

sys.exit(main())
