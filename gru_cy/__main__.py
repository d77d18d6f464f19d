import sys

from gru_cy.cli import main

sys.exit(main())
