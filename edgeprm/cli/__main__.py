import sys

from edgeprm.cli import main

sys.exit(main())
