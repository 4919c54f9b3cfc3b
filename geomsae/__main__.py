"""``python -m geomsae ...`` is the ``geomsae`` command."""

import sys

from geomsae.cli import main

if __name__ == "__main__":
    sys.exit(main())
