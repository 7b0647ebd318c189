import sys

from trainables.image.train_cli import main

sys.exit(main())
