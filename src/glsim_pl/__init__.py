"""glsim_pl."""
__version__ = "0.1.0"
