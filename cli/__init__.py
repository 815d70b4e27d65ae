"""The `dualnet` command line: parses arguments, calls the pipeline functions, prints with Rich."""
