"""Tools on top of the package: diagrams of the table, the demo, the command line."""
