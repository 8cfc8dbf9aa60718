import sys

from tower_megatron.cli import main

if __name__ == "__main__":
    sys.exit(main())
