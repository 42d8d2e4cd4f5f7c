"""``python -m eventsim`` runs the ``eventsim`` command."""

import sys

from eventsim.launcher import main

sys.exit(main())
