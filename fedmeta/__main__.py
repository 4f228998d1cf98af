import sys

from fedmeta.cli import main

sys.exit(main())
