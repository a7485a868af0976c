"""``python -m mmdesc`` = the ``mmdesc`` command."""
from mmdesc.cli import main

main()
