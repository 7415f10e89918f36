import sys

from ncjax.cli import main

sys.exit(main())
