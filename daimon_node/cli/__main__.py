"""``python -m daimon_node.cli`` runs the command-line interface."""

from daimon_node.cli.app import main

main()
