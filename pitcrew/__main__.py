import sys

from pitcrew.cli import main

sys.exit(main())
