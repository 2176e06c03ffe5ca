import sys

from simfarm.farm import main

sys.exit(main())
