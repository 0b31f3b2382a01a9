"""Allow ``python -m trainwarden``."""

from trainwarden.cli import main

if __name__ == "__main__":
    main()
