"""The ``tvm-onednn`` command line: argument parsing only; the work lives in the library."""
