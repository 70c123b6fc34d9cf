import sys

from mountd.server import main

sys.exit(main())
