"""``python -m glasscam`` is the ``glasscam`` command."""

from glasscam.analysis.cli import main

main()
