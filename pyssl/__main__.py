import sys

from pyssl.cli import main

sys.exit(main())
