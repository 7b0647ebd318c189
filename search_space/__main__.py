import sys

from .genotype_cli import main

sys.exit(main())
