import sys

from lsca.supervisor.cli import main

sys.exit(main())
