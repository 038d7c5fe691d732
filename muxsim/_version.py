"""The version of muxsim, in a module of its own so that any layer can import it (a calibration
sweep records it in every row) without importing the package's top."""

__version__ = "0.1.0"
