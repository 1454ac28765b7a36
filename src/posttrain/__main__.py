"""`python -m posttrain ...` is the `posttrain` command (for a venv whose scripts are not on PATH, and for
benchmarks and tests that run the CLI as `sys.executable -m posttrain`)."""

from posttrain.cli import main

if __name__ == "__main__":
    main()
